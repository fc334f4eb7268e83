{{/*
Names and labels shared by every template.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "pruneforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: fullnameOverride, else <release>-<name> (or the release name when it already contains the name). */}}
{{- define "pruneforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator Deployment, ServiceAccount and RBAC objects. */}}
{{- define "pruneforge.operatorName" -}}
{{- printf "%s-operator" (include "pruneforge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pruneforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object, without the component. */}}
{{- define "pruneforge.metaLabels" -}}
helm.sh/chart: {{ include "pruneforge.chart" . }}
app.kubernetes.io/name: {{ include "pruneforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pruneforge
{{- end -}}

{{/* Labels of the operator's objects. */}}
{{- define "pruneforge.labels" -}}
{{ include "pruneforge.metaLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels selecting the operator pods. */}}
{{- define "pruneforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pruneforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Operator ServiceAccount name. */}}
{{- define "pruneforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pruneforge.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Runner ServiceAccount name. */}}
{{- define "pruneforge.runnerServiceAccountName" -}}
{{- if .Values.runner.serviceAccount.create -}}
{{- default (printf "%s-runner" (include "pruneforge.fullname" .) | trunc 63 | trimSuffix "-") .Values.runner.serviceAccount.name -}}
{{- else -}}
{{- .Values.runner.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag}; the tag defaults to the appVersion; a tag starting with @ is a digest. */}}
{{- define "pruneforge.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if hasPrefix "@" $tag -}}
{{- printf "%s%s" .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules of the operator in a watched namespace (a ClusterRole when watching all namespaces).
Exactly the verbs the operator uses, no wildcards:
- PruneDistillJobs: watched (get/list/watch), finalizer pruneforge.dev/artifacts added and removed
  (a JSON patch), status written through the status subresource (patch);
  prunedistilljobs/finalizers update lets owner references with blockOwnerDeletion point at a job
  (needed where the OwnerReferencesPermissionEnforcement admission plugin is on).
- Jobs: created, read (the clean-up Job by name), listed, watched and deleted, owned by the job.
- ConfigMaps (the stage request): written by server-side apply (create/patch), listed and deleted.
Kept equal to `pruneforge-operator rbac` by a test (tests/tests/chart.rs).
- Pods of stage Jobs: read (get/list/watch) with their status (termination messages, failure reasons).
- Events: kube-runtime's Recorder writes events.k8s.io/v1 Events (create, then patch for a series).
*/}}
{{- define "pruneforge.operatorRules" -}}
- apiGroups: ["pruneforge.dev"]
  resources: ["prunedistilljobs"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["pruneforge.dev"]
  resources: ["prunedistilljobs/status"]
  verbs: ["patch"]
- apiGroups: ["pruneforge.dev"]
  resources: ["prunedistilljobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
