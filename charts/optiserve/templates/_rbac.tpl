{{/*
What the operator does in the namespaces it watches: exactly the API calls of
operator/optiserve_operator (kopf handlers and the kube module) and of kopf itself, nothing
more. tests/chart/test_rbac.py compares these rules with the calls the operator code makes;
change both together. No secrets, no wildcards.
*/}}
{{- define "optiserve.rules.namespaced" -}}
# OptimizedModels: kopf lists and watches them; a reconcile pass reads one (and lists the
# namespace's others for artifacts still in use), server-side applies its status, and its own
# finalizer (patch) when artifacts must be removed on delete.
- apiGroups: ["optiserve.io"]
  resources: ["optimizedmodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["optiserve.io"]
  resources: ["optimizedmodels/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion, which clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift does) allow only to whoever
# may update the owner's finalizers. The operator sets no finalizer itself.
- apiGroups: ["optiserve.io"]
  resources: ["optimizedmodels/finalizers"]
  verbs: ["update"]
# The optimization Job and the artifact-cleanup Job: watched, created (or read when it
# exists), superseded ones deleted.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The ConfigMap that hands the Job its spec: created, or read when it exists; listed and
# deleted once its Job is superseded (storage.retention). Watched (only those labelled
# managed-by: optiserve): passes read children from the watches, not with requests.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The Job's pods: listed for the optimizer's summary in their termination message, watched
# so a pod that cannot be scheduled or pulled is reported at once, and the running
# optimizer's log tail read (bounded) for its progress.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Triton's Deployment (watched, read) and Service: server-side apply, which is a patch, and a
# create when the object does not exist yet. Every applied child is read first: an apply that
# would change nothing is not sent (optiserve_operator/applied.py).
# Deployments are deleted too: the canary Deployment (<name>-canary) once a canary rollout is
# promoted or aborted; and Services: the canary's (<name>-canary, an HTTPRoute's canary
# backend) once the route no longer sends to it.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Triton's PodDisruptionBudget: watched and read, server-side applied (patch, and create when
# it does not exist yet).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Triton's NetworkPolicy (serving.networkPolicy): watched and read to notice one the spec
# switched off, server-side applied while wanted, deleted after.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Triton's HTTP API outside the cluster (serving.exposure): a Gateway API HTTPRoute or an
# Ingress, listed by the model's label (a 404 on the list says the Gateway API CRDs are not
# installed), read before an apply (no write when it is as wanted), server-side applied while
# wanted, deleted after. Ingresses are watched (read from the watch); HTTPRoutes are not (the
# CRDs may come and go).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Triton's autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject): applied, read back, and
# deleted when the spec switches from one to the other or drops autoscaling.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "patch", "delete"]
# core/v1 Events about each OptimizedModel (the operator's and kopf's).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/*
The leader-election Lease (--leader-elect, replicaCount > 1) in the release namespace: what
operator/optiserve_operator/leader.py does to it. get and update (renew, take over, release)
are limited to the one Lease by name; create cannot be (the name is not known to RBAC before
the object exists), so it is allowed for leases of this namespace only.
*/}}
{{- define "optiserve.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "optiserve.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end -}}

{{/* Cluster-scoped reads kopf needs in every mode. */}}
{{- define "optiserve.rules.framework" -}}
# kopf watches CRDs to notice when the resources it serves appear or change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not .Values.clusterWide }}
# kopf lists namespaces to match the ones it was given (namespaced mode only).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}
