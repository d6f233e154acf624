{{- define "umbrella.fullname" -}}
{{- printf "%s-storefront" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "umbrella.selectorLabels" -}}
app.kubernetes.io/name: storefront
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
