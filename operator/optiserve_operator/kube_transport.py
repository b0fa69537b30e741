"""Every request the operator makes to the API server goes through ``KubeTransport.request``.

It is the ``kubernetes`` client's REST layer and nothing above it, so objects stay camelCase
dicts that the pure modules read and render. Each request takes a token of the client-side rate
limit and waits as a 429 asks (ratelimit.py); an error status becomes a ``KubeError`` with the
server's reason and message. The verbs built on it are ``Kube``'s (kube.py, kube_paging.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal, overload
from urllib.parse import quote, urlencode

from kubernetes import client, config

from optiserve_operator import metrics
from optiserve_operator.ratelimit import (
    MAX_THROTTLE_RETRIES,
    TokenBucket,
    throttle_delay,
    transport_retries,
)

Obj = dict[str, Any]

PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Event": "events",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "HTTPRoute": "httproutes",
    "Ingress": "ingresses",
    "Job": "jobs",
    "Lease": "leases",
    "NetworkPolicy": "networkpolicies",
    "OptimizedModel": "optimizedmodels",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "ScaledObject": "scaledobjects",
    "Service": "services",
}
# (connect, read) seconds: a hung API server is a transient error, not a hung worker.
REQUEST_TIMEOUT = (10.0, 60.0)


class KubeError(RuntimeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def api_prefix(api_version: str) -> str:
    """Where the resources of ``api_version`` are served: the core group, or a named one."""
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def resource_path(
    api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    path = f"{api_prefix(api_version)}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    if name is not None:
        path += f"/{quote(name)}"
    if sub is not None:
        path += f"/{sub}"
    return path


def api_client_from_environment(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (``KUBECONFIG``)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    configuration.retries = transport_retries()
    return client.ApiClient(configuration)


class KubeTransport:
    def __init__(self, api_client: client.ApiClient, limiter: TokenBucket | None = None) -> None:
        self.api = api_client
        self.limiter = limiter  # every request takes a token (ratelimit.py); None: no limit

    @overload
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: Literal[False] = False,
        accept: str = "application/json",
    ) -> Obj: ...

    @overload
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: Literal[True],
        accept: str = "application/json",
    ) -> bytes: ...

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
        accept: str = "application/json",
    ) -> Obj | bytes:
        """Every call to the API server. The answer as a JSON object (a bare list as
        ``{"items": [...]}``), or with ``raw`` its bytes as sent (pods/log is text); an error
        status raises ``KubeError`` with the server's reason and message."""
        url = self.api.configuration.host + path
        if query:
            url += "?" + urlencode(dict(query))
        # Also for pods/log, whose text the API server sends under any of its media types but
        # refuses to negotiate as text/plain (406).
        headers = {"Accept": accept, "Content-Type": content_type}
        # Authentication headers (token, refreshed exec credentials) the client would add.
        self.api.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        for attempt in range(MAX_THROTTLE_RETRIES + 1):
            if self.limiter is not None:
                metrics.CLIENT_WAIT.inc(self.limiter.acquire())
            response = self.api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT
            )
            metrics.API_REQUESTS.labels(method, str(response.status)).inc()
            if response.status != 429 or attempt == MAX_THROTTLE_RETRIES:
                break
            # Throttled by the API server: wait as it asks, then again (ratelimit.py).
            retry_after = response.getheader("Retry-After")  # type: ignore[no-untyped-call]
            time.sleep(throttle_delay(retry_after, attempt))
        content: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            try:
                error: Any = json.loads(content) if content else {}
            except ValueError:  # e.g. "404 page not found" for a resource type with no CRD
                error = {"message": content.decode("utf-8", "replace")[:200]}
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            reason = error.get("reason", "") if isinstance(error, dict) else ""
            raise KubeError(response.status, reason or str(response.reason), str(message))
        if raw:
            return content
        try:
            data: Any = json.loads(content) if content else {}
        except ValueError as err:
            raise KubeError(502, "BadGateway", f"the API server answered no JSON: {err}") from err
        return data if isinstance(data, dict) else {"items": data}
