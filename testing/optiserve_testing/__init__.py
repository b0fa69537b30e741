"""optiserve_testing: a local Kubernetes control plane for tests, benchmarks and people.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from pinned binaries
(hack/cluster/build.sh), a pod runner that really runs Job and Triton pods on this machine,
PKI, Prometheus and a custom metrics API. ``python -m optiserve_testing`` (``make cluster``)
starts one for a person; ``optiserve_testing.fixtures`` is the pytest plugin. The product
(optiserve, optiserve_operator, optiserve_optimizer) never imports it (.importlinter).
"""
