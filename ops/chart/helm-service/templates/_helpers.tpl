{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "helm-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the installation's objects: the release name, with the chart name appended
unless the release name already contains it.
*/}}
{{- define "helm-service.fullname" -}}
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

{{- define "helm-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Kubernetes recommended labels.
*/}}
{{- define "helm-service.labels" -}}
helm.sh/chart: {{ include "helm-service.chart" . }}
{{ include "helm-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: keptn
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable across upgrades.
*/}}
{{- define "helm-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "helm-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "helm-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "helm-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "helm-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
A worker duration (500ms, 30s, 5m, 2h, 7d or bare seconds, as `helm-service run` parses them),
checked here so a typo fails at install time instead of in a crash-looping pod.
Call with (list "valueName" value).
*/}}
{{- define "helm-service.duration" -}}
{{- $name := index . 0 }}
{{- $value := index . 1 | toString | trim }}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h|d)?$" $value) }}
{{- fail (printf "%s: %q is not a duration such as 500ms, 30s, 5m, 2h or 7d" $name $value) }}
{{- end }}
{{- $value }}
{{- end }}

{{/*
shutdownGrace in whole seconds (rounded up).
*/}}
{{- define "helm-service.shutdownGraceSeconds" -}}
{{- $value := include "helm-service.duration" (list "shutdownGrace" .Values.shutdownGrace) }}
{{- $digits := regexFind "^[0-9]+" $value }}
{{- $n := atoi $digits }}
{{- $unit := trimPrefix $digits $value }}
{{- if eq $unit "ms" }}
{{- div (add $n 999) 1000 }}
{{- else if eq $unit "m" }}
{{- mul $n 60 }}
{{- else if eq $unit "h" }}
{{- mul $n 3600 }}
{{- else if eq $unit "d" }}
{{- mul $n 86400 }}
{{- else }}
{{- $n }}
{{- end }}
{{- end }}

{{/*
How long Kubernetes waits between SIGTERM and SIGKILL: the worker's shutdown grace plus 10s
for handing unfinished tasks back and closing the NATS connection, unless set explicitly.
*/}}
{{- define "helm-service.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds | int64 }}
{{- else }}
{{- add (include "helm-service.shutdownGraceSeconds" . | atoi) 10 }}
{{- end }}
{{- end }}

{{/*
The files the worker reads its secrets from: one Secret key each, mounted read-only below
/etc/helm-service/secrets/<volume>/, and the environment variable that names the file. A YAML
list of {env, volume, secret, key, file}; the Deployment renders the env entries, volumes and
mounts from it, so the three always agree. Fails on more than one kind of NATS credentials.
*/}}
{{- define "helm-service.secretFiles" -}}
{{- $files := list }}
{{- $auth := .Values.nats.auth }}
{{- $kinds := 0 }}
{{- with $auth.credsSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "NATS_CREDS" "volume" "nats-creds" "secret" .name "key" .key "file" "user.creds") }}
{{- $kinds = add1 $kinds }}
{{- end }}{{- end }}
{{- with $auth.nkeySecret }}{{- if .name }}
{{- $files = append $files (dict "env" "NATS_NKEY" "volume" "nats-nkey" "secret" .name "key" .key "file" "seed.nk") }}
{{- $kinds = add1 $kinds }}
{{- end }}{{- end }}
{{- with $auth.passwordSecret }}{{- if .name }}
{{- if not $auth.user }}
{{- fail "nats.auth.passwordSecret needs nats.auth.user" }}
{{- end }}
{{- $files = append $files (dict "env" "NATS_PASSWORD_FILE" "volume" "nats-password" "secret" .name "key" .key "file" "password") }}
{{- $kinds = add1 $kinds }}
{{- end }}{{- end }}
{{- if and $auth.user (not $auth.passwordSecret.name) }}
{{- fail "nats.auth.user needs nats.auth.passwordSecret" }}
{{- end }}
{{- with $auth.tokenSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "NATS_TOKEN_FILE" "volume" "nats-token" "secret" .name "key" .key "file" "token") }}
{{- $kinds = add1 $kinds }}
{{- end }}{{- end }}
{{- if gt $kinds 1 }}
{{- fail "nats.auth: give one of credsSecret, nkeySecret, user with passwordSecret, tokenSecret" }}
{{- end }}
{{- with .Values.nats.tls.caSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "NATS_CA" "volume" "nats-ca" "secret" .name "key" .key "file" "ca.crt") }}
{{- end }}{{- end }}
{{- with .Values.nats.tls.clientSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "NATS_CERT" "volume" "nats-client-cert" "secret" .name "key" .certKey "file" "tls.crt") }}
{{- $files = append $files (dict "env" "NATS_KEY" "volume" "nats-client-key" "secret" .name "key" .keyKey "file" "tls.key") }}
{{- end }}{{- end }}
{{- with .Values.tracing.tls.caSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "OTEL_EXPORTER_OTLP_CERTIFICATE" "volume" "otlp-ca" "secret" .name "key" .key "file" "ca.crt") }}
{{- end }}{{- end }}
{{- with .Values.tracing.tls.clientSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE" "volume" "otlp-client-cert" "secret" .name "key" .certKey "file" "tls.crt") }}
{{- $files = append $files (dict "env" "OTEL_EXPORTER_OTLP_CLIENT_KEY" "volume" "otlp-client-key" "secret" .name "key" .keyKey "file" "tls.key") }}
{{- end }}{{- end }}
{{- with .Values.charts.resourceServiceTokenSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "RESOURCE_SERVICE_TOKEN_FILE" "volume" "resource-service-token" "secret" .name "key" .key "file" "token") }}
{{- end }}{{- end }}
{{- with .Values.charts.resourceServiceCaSecret }}{{- if .name }}
{{- $files = append $files (dict "env" "RESOURCE_SERVICE_CA" "volume" "resource-service-ca" "secret" .name "key" .key "file" "ca.crt") }}
{{- end }}{{- end }}
{{- toYaml $files }}
{{- end }}
