{{/* The chart's name, or nameOverride. */}}
{{- define "driftwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects: fullnameOverride, or the release name
when it already contains the chart name, or <release>-<chart>.
*/}}
{{- define "driftwarden.fullname" -}}
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

{{- define "driftwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "driftwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "driftwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "driftwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Names the operator uses in its own namespace. They are fixed in the operator
(flags with these defaults); the Role grants access to these names only.
*/}}
{{- define "driftwarden.webhookSecretName" -}}driftwarden-webhook-tls{{- end }}
{{- define "driftwarden.auditSecretName" -}}driftwarden-audit{{- end }}

{{/* The Secret cert-manager writes the webhook certificate into. */}}
{{- define "driftwarden.certManagerSecretName" -}}
{{- printf "%s-webhook-cert" (include "driftwarden.fullname" .) }}
{{- end }}

{{- define "driftwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
How the API server reaches the admission webhooks at `path`: the Service in
front of the operator's Pods, or `webhook.url` for an operator that runs
outside the cluster (a local control plane, say).
*/}}
{{- define "driftwarden.webhookClientConfig" -}}
{{- if .root.Values.webhook.url -}}
url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhook.url) .path | quote }}
{{- else -}}
service:
  namespace: {{ .root.Release.Namespace }}
  name: {{ include "driftwarden.fullname" .root }}
  path: {{ .path }}
  port: {{ .root.Values.webhook.port }}
{{- end -}}
{{- end }}
