"""Names vulture reports as unused that are used, each with the reason it cannot see.

vulture reads this file with the code (``make lint``: ``vulture`` with the paths in
pyproject.toml's ``[tool.vulture]``); a new finding fails the lint. Add a name here only with
the reason; remove dead code instead. Never executed: the names are only parsed.
"""

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# kopf calls these: registered by decorators (@kopf.on.event, @kopf.on.probe), not called here.
queue_depth  # operator/optiserve_operator/handlers.py
model_event
child_event
read_only_child_event
optimizer_pod_event
# kopf reads these settings (handlers.py startup); assigning them is the use.
_.progress_storage
_.diffbase_storage
_.server_timeout
_.client_timeout
_.chunk_size
_.idle_timeout

# onnxruntime SessionOptions and protobuf fields: set here, read by onnxruntime / Triton.
_.intra_op_num_threads
_.inter_op_num_threads
_.log_severity_level
_.graph_optimization_level
_.optimized_model_filepath
_.string_value  # config.pbtxt parameter (serve/repository.py)

# The pass registry reads each pass's settings_type (registry.py, through the Pass protocol);
# tests/optimizer/test_registry_settings.py checks every pass declares one.
_.settings_type
settings_type
# The order steps run in; tests/optimizer/test_registry_settings.py checks plans follow it.
STEP_ORDER

# pydantic calls validators (@field_validator / @model_validator); the names are never called.
_._symmetric_is_static_int8  # optimizer/optiserve_optimizer/settings.py
_._something_to_prune
_._labels  # src/optiserve/api/resource.py
_._annotations
_._finalizers
_._check_rules  # src/optiserve/api/rules.py

# pydantic fields: read from the API server's object (metadata) or written to the wire
# (status.metrics: kubectl, printer columns and the report read them), never by attribute.
owner_references
resource_version
creation_timestamp
deletion_grace_period_seconds
managed_fields
self_link
baseline_latency_ms
optimized_latency_ms
baseline_throughput
optimized_throughput
speedup_range
speedup_vs_onnxruntime

# Triton's counters, filled by name from its metrics (serve/loadgen.py) and printed whole.
request_ns
queue_ns
compute_input_ns
compute_output_ns
cache_miss_ns

# Signature parameters a protocol requires: signal handlers, __exit__.
frame
exc_type
exc_info
traceback

# Public API that tests use as their oracle or entry point.
is_two_four  # 2:4 sparsity check (tests/optimizer/test_pruning.py, test_models.py)
validate_text  # optiserve.validate on text (tests/unit/test_validate.py)
CRD_FILE  # the committed CRD's path (tests/unit/test_crd.py compares it with the generator)
render_adapter_config_map  # the prometheus-adapter rules as the chart ships them
helm_values  # (tests/unit/test_render_autoscaling.py checks the chart against both)
_.for_source  # checks.Checker over whole arrays: what the streamed gate is compared with
derive_profiles  # shapes over whole arrays: the oracle of the streamed profiles (test_data_stream)

# The test harness (optiserve_testing): what tests and people call on a LocalCluster.
_.kubernetes_version  # binaries.py
_.pod_runner  # cluster.py
cluster_namespace  # fixtures.py: a pytest fixture, requested by name
routed_cluster  # fixtures.py: a pytest fixture, requested by name
_.do_GET  # custom_metrics.py: http.server calls do_GET / log_message by name
_.log_message
_.daemon_threads  # read by socketserver.ThreadingMixIn

# API model fields read through pydantic (serialization, the CRD schema), not by attribute.
section_name  # src/optiserve/api/exposure.py: parentRefs[].sectionName
spec_throughput_rps  # src/optiserve/api/tuning.py: status.serving.tuning
spec_p99_ms
stable_revision  # src/optiserve/api/rollout.py: status.rollout, read by the printer columns
canary_revision

# The harness is used by tests, which vulture does not scan.
uninstall_gateway_api  # testing/optiserve_testing/gateway_api.py: tests/e2e/test_exposure_e2e.py

# Protocol parameters and wire fields: named by the protocol or the S3 listing, not read here.
amt  # src/optiserve/remote/fetch.py: Stream.read(amt), http.client's signature
etag  # src/optiserve/remote/s3.py: ObjectInfo, as S3's ListObjectsV2 reports it

# Artifacts on S3 (upload with a completion marker, pull, delete): tested in
# tests/remote/test_artifacts_s3.py; `storage` as an S3 prefix (issue 16) is not wired yet.
upload_folder  # src/optiserve/remote/artifacts.py
pull_folder
delete_folder

# The S3 test server's API, used by tests (which vulture does not scan).
_.put  # testing/optiserve_testing/s3server.py
start_s3

# urllib3's retry policy, read by the kubernetes client's pool manager (kube_transport.py).
_.retries
# The stated hand-over bound, asserted by tests/e2e/test_leader_election.py.
TAKEOVER_BOUND  # operator/optiserve_operator/leader.py

# The images harness, used by tests/images and tests/e2e (which vulture does not scan).
_.without  # testing/optiserve_testing/images.py
_.site_packages
images_by_reference
pip_ca_bundle
require_built_images
SHORT_TUNING  # testing/optiserve_testing/image_tuning.py
short_search_problems

# Triton's python backend calls these by name (benchmarks/gpu_triton/model.py).
TritonPythonModel
_.initialize

# Harness verbs the 410 Gone e2e calls (tests/e2e/test_watch_gone.py); the sweep counter is read
# by tests/operator/test_relist_sweep.py.
_.restart_apiserver
_.compact_etcd
_.sweeps
