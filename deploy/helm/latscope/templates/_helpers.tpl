{{/* The chart's name, shortened to a DNS label. */}}
{{- define "latscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: every object is named after it. */}}
{{- define "latscope.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "latscope.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "latscope.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{/* Labels that select the agent's pods. */}}
{{- define "latscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "latscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "latscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Memory limit in MiB: the store's budget plus the agent's overhead. */}}
{{- define "latscope.memoryMiB" -}}
{{- add (int .Values.store.sizeMiB) (int .Values.resources.memoryOverheadMiB) }}
{{- end }}

{{/* The agent's configuration file. */}}
{{- define "latscope.config" -}}
{{- $c := dict "http" (printf "0.0.0.0:%d" (int .Values.port)) "store" (dict "size" (printf "%dMiB" (int .Values.store.sizeMiB))) "keep" .Values.config.keep "inject" .Values.config.inject }}
{{- with .Values.config.selectors }}{{ $_ := set $c "selectors" . }}{{ end }}
{{- with .Values.config.exclude }}{{ $_ := set $c "exclude" . }}{{ end }}
{{- with .Values.config.funcs }}{{ $_ := set $c "funcs" . }}{{ end }}
{{- $c = mergeOverwrite $c (deepCopy .Values.config.extra) }}
{{- toYaml $c }}
{{- end }}
