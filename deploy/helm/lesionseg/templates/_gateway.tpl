{{/* The gateway's address of Triton: gateway.url, else this release's Triton (or KServe predictor). */}}
{{- define "lesionseg.gatewayUrl" -}}
{{- if .Values.gateway.url }}
{{- .Values.gateway.url }}
{{- else if .Values.kserve.enabled }}
{{- printf "%s-predictor:80" (include "lesionseg.fullname" .) }}
{{- else }}
{{- include "lesionseg.tritonGrpcAddress" . }}
{{- end }}
{{- end }}

{{/*
gateway.toml (gateway/config.py). Values are written with toJson: a JSON string, number,
boolean or array of strings is also a TOML one (escapes included).
*/}}
{{- define "lesionseg.gatewayToml" -}}
{{- $c := .Values.gateway.config -}}
# Rendered by the lesionseg chart from gateway.config; see the README's "Hospital PACS" section.
[gateway]
host = "0.0.0.0"
port = {{ .Values.gateway.dicomPort | int }}
spool = "/var/spool/lesionseg"
url = {{ include "lesionseg.gatewayUrl" . | toJson }}
embedded_server = false
metrics_port = {{ .Values.gateway.metricsPort | int }}
{{- range $key, $value := $c.gateway }}
{{ $key }} = {{ toJson $value }}
{{- end }}
[callers]
{{- range $c.callers }}
{{ toJson .ae_title }} = {{ toJson .hosts }}
{{- end }}
{{- range $c.routes }}
[[routes]]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- range $c.destinations }}
[[destinations]]
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}
