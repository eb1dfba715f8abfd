{{/* Chart name, truncated to 63 characters (a label value). */}}
{{- define "quiclb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "quiclb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "quiclb.operatorName" -}}{{ include "quiclb.fullname" . }}-operator{{- end }}
{{- define "quiclb.dataplaneName" -}}{{ include "quiclb.fullname" . }}-dataplane{{- end }}
{{- define "quiclb.operatorServiceAccount" -}}{{ default (include "quiclb.operatorName" .) .Values.operator.serviceAccount.name }}{{- end }}
{{- define "quiclb.dataplaneServiceAccount" -}}{{ default (include "quiclb.dataplaneName" .) .Values.dataplane.serviceAccount.name }}{{- end }}
{{/* Secrets holding ca.crt, tls.crt and tls.key (the TLS directories of docs/config-channel.md). */}}
{{- define "quiclb.operatorTlsSecret" -}}{{ include "quiclb.fullname" . }}-operator-tls{{- end }}
{{- define "quiclb.dataplaneTlsSecret" -}}{{ include "quiclb.fullname" . }}-dataplane-tls{{- end }}
{{/* The config channel's Service; the data planes dial <name>.<namespace>.svc, which the server certificate covers. */}}
{{- define "quiclb.configServiceHost" -}}{{ include "quiclb.operatorName" . }}.{{ .Release.Namespace }}.svc{{- end }}

{{- define "quiclb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "quiclb.labels" -}}
helm.sh/chart: {{ include "quiclb.chart" . }}
app.kubernetes.io/name: {{ include "quiclb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quiclb
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component (operator, dataplane); call with (dict "ctx" $ "component" "operator"). */}}
{{- define "quiclb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quiclb.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quiclb.componentLabels" -}}
{{ include "quiclb.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quiclb.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end }}

{{/* Security context of containers that run as the image's non-root user. */}}
{{- define "quiclb.restrictedSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* HOST:PORT with IPv6 hosts in brackets; call with (list host port). */}}
{{- define "quiclb.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}[{{ $host }}]:{{ index . 1 }}{{- else -}}{{ $host }}:{{ index . 1 }}{{- end -}}
{{- end }}


{{/* The data plane's user: root only when it must bind ports below 1024. */}}
{{- define "quiclb.dataplaneUid" -}}{{ if .Values.dataplane.bindPrivilegedPorts }}0{{ else }}65532{{ end }}{{- end }}
