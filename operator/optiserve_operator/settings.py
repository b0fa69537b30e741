"""The operator's own configuration: command-line flags, with environment defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from optiserve.digest import optiserve_version
from optiserve_operator.ratelimit import DEFAULT_BURST, DEFAULT_QPS

DEFAULT_OPTIMIZER_IMAGE = f"ghcr.io/optiserve/optimizer:{optiserve_version()}"
# When a model is looked at again without a watch event: the flags' and reconcile.Config's
# defaults. (Here, not in reconcile.py: the flags are parsed before KUBECONFIG is set, so this
# module must not import what imports the kubernetes client; see main.run_with.)
POLL_SECONDS = 10.0  # while something is in progress (child events come sooner)
RESYNC_SECONDS = 300.0  # when settled


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster-wide)
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    metrics_port: int | None = None  # Prometheus metrics of the operator itself
    log_format: str = "plain"  # plain | full | json
    verbose: bool = False
    optimizer_image: str = DEFAULT_OPTIMIZER_IMAGE
    job_service_account: str | None = None
    policy_dir: str | None = None  # the policy ConfigMap, mounted; None: structural rules only
    prometheus_url: str | None = None  # canary analysis reads Triton's metrics here
    workers: int = 4
    poll_seconds: float = POLL_SECONDS
    resync_seconds: float = RESYNC_SECONDS
    api_qps: float = DEFAULT_QPS  # client-side token bucket of the workers' requests
    api_burst: int = DEFAULT_BURST
    leader_elect: bool = False  # several replicas: only the Lease holder reconciles (leader.py)
    leader_election_namespace: str = "default"
    leader_election_id: str = "optiserve-operator"
    kubeconfig: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="optiserve operator",
        description="Run the OptimizedModel operator (kopf) against the current cluster.",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs allowed); default: all namespaces",
    )
    # kopf always runs standalone (main.py); the flag stays accepted so that command lines
    # written for earlier versions, which had kopf peering, keep working.
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="accepted and ignored: kopf peering is never used; several replicas need "
        "--leader-elect",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=env("OPTISERVE_LIVENESS"),
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        default=int(env("OPTISERVE_METRICS_PORT", "0")) or None,
        help="serve the operator's Prometheus metrics on this port",
    )
    parser.add_argument(
        "--log-format",
        choices=("plain", "full", "json"),
        default=env("OPTISERVE_LOG_FORMAT", "plain"),
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument(
        "--optimizer-image",
        default=env("OPTISERVE_OPTIMIZER_IMAGE", DEFAULT_OPTIMIZER_IMAGE),
        help="image of optimization Jobs whose spec names none",
    )
    parser.add_argument("--job-service-account", default=env("OPTISERVE_JOB_SERVICE_ACCOUNT"))
    parser.add_argument(
        "--policy-dir",
        metavar="DIR",
        default=env("OPTISERVE_POLICY_DIR"),
        help="the admission policy ConfigMap mounted as a folder (one file per key); "
        "specs that break it are refused (Stalled, PolicyDenied) before anything is rendered",
    )
    parser.add_argument(
        "--prometheus-url",
        metavar="URL",
        default=env("OPTISERVE_PROMETHEUS_URL") or None,
        help="Prometheus that scrapes the Triton pods (http://prometheus.monitoring:9090); "
        "canary rollouts read their analysis there, and without it no canary is started",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="OptimizedModels reconciled at the same time"
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=POLL_SECONDS,
        help="re-check interval while a Job or rollout is in progress",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=RESYNC_SECONDS,
        help="re-check interval of settled models",
    )
    parser.add_argument(
        "--api-qps",
        type=float,
        default=float(env("OPTISERVE_API_QPS", str(DEFAULT_QPS))),
        help="requests per second to the API server, client-side (token bucket)",
    )
    parser.add_argument(
        "--api-burst",
        type=int,
        default=int(env("OPTISERVE_API_BURST", str(DEFAULT_BURST))),
        help="requests allowed at once above --api-qps",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease "
        "reconciles, a standby takes over when it stops renewing",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    parser.add_argument(
        "--leader-election-id", default="optiserve-operator", help="name of the Lease"
    )
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"))
    return parser


def parse_settings(argv: Sequence[str]) -> OperatorSettings:
    args = build_parser().parse_args(list(argv))
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.api_qps <= 0 or args.api_burst < 1:
        raise SystemExit("--api-qps must be above 0 and --api-burst at least 1")
    return OperatorSettings(
        namespaces=tuple(args.namespace),
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        verbose=args.verbose,
        optimizer_image=args.optimizer_image,
        job_service_account=args.job_service_account,
        policy_dir=args.policy_dir,
        prometheus_url=args.prometheus_url,
        workers=args.workers,
        poll_seconds=args.poll_seconds,
        resync_seconds=args.resync_seconds,
        api_qps=args.api_qps,
        api_burst=args.api_burst,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        leader_election_id=args.leader_election_id,
        kubeconfig=args.kubeconfig,
    )
