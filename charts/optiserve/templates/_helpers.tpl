{{/* Name of the chart, truncated to a DNS label. */}}
{{- define "optiserve.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, suffixed with the chart name unless it already contains it. */}}
{{- define "optiserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pod (stable: a Deployment's selector is immutable). */}}
{{- define "optiserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "optiserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "optiserve.labels" -}}
{{ include "optiserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "optiserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "optiserve.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag or repository@digest of an image block ({repository, tag, digest}). */}}
{{- define "optiserve.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
true when more than one replica runs: the operator then runs with --leader-elect and only the
holder of the Lease (named by optiserve.leaseName, in the release namespace) reconciles.
*/}}
{{- define "optiserve.leaderElect" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* The leader-election Lease: one per release, in the release namespace. */}}
{{- define "optiserve.leaseName" -}}
{{- include "optiserve.fullname" . -}}
{{- end -}}

{{/*
The namespaces the operator watches, as a JSON list: none when cluster-wide (every namespace),
else watchNamespaces, else the release's own namespace. Fails on contradictory values and on
the system namespaces unless allowSystemNamespaces is set.
*/}}
{{- define "optiserve.namespaces" -}}
{{- if .Values.clusterWide -}}
{{- if .Values.watchNamespaces -}}
{{- fail "clusterWide: true watches every namespace: leave watchNamespaces empty" -}}
{{- end -}}
[]
{{- else -}}
{{- $namespaces := .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- range $namespaces -}}
{{- if and (has . (list "kube-system" "kube-public" "kube-node-lease")) (not $.Values.allowSystemNamespaces) -}}
{{- fail (printf "watchNamespaces: %s is a system namespace; set allowSystemNamespaces: true to let the operator create Jobs and Deployments there" .) -}}
{{- end -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}
{{- end -}}

{{/* The policy ConfigMap's data: the keys optiserve.policy.POLICY_KEYS reads. */}}
{{- define "optiserve.policyData" -}}
allowedImagePrefixes: {{ join "," .Values.policy.allowedImagePrefixes | quote }}
maxGpus: {{ .Values.policy.maxGpus | toString | quote }}
maxCpu: {{ .Values.policy.maxCpu | toString | quote }}
maxMemory: {{ .Values.policy.maxMemory | toString | quote }}
allowedNodeSelectors: {{ join "," .Values.policy.allowedNodeSelectors | quote }}
allowedTolerations: {{ join "," .Values.policy.allowedTolerations | quote }}
allowedSourceClaims: {{ join "," .Values.policy.allowedSourceClaims | quote }}
allowedStorageClaims: {{ join "," .Values.policy.allowedStorageClaims | quote }}
{{- end -}}
