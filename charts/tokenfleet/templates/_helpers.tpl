{{/* Chart name, truncated to 63 chars. */}}
{{- define "tokenfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "tokenfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The runtime pods' app.kubernetes.io/name: the one spelling of the label that marks a runtime pod
(the DaemonSets, the PodMonitor and the operator's TOKENFLEET_RUNTIME_POD_LABEL all use it).
*/}}
{{- define "tokenfleet.runtimeName" -}}
tokenfleet-runtime
{{- end }}

{{- define "tokenfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenfleet.labels" -}}
helm.sh/chart: {{ include "tokenfleet.chart" . }}
{{ include "tokenfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tokenfleet
{{- end }}

{{- define "tokenfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokenfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tokenfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The operator's rules on namespaced kinds (a ClusterRole's when it watches all namespaces, else a
Role's in each watched namespace). Args: ha (peering on), peering (the kopf peering plural).
*/}}
{{- define "tokenfleet.namespacedRules" -}}
# Events on the objects it handles (kopf posts them with create).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# InferenceJobs: watched, finalized and annotated by kopf, status written by the job daemon.
- apiGroups: [tokenfleet.io]
  resources: [inferencejobs]
  verbs: [list, watch, patch]
- apiGroups: [tokenfleet.io]
  resources: [inferencejobs/status]
  verbs: [patch]
# Runtime pods: each node's Triton address (a kopf index; the pod watch is label-filtered).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Routing: one selector-less Service and EndpointSlice per InferenceJob (read, created, patched;
# deleted by the garbage collector with the job).
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, create, patch]
{{- if .ha }}
# kopf peering (HA): the operator creates its peering object and keeps alive in its status.
- apiGroups: [kopf.dev]
  resources: [{{ .peering }}]
  verbs: [list, watch, patch, create]
{{- end }}
{{- end }}
