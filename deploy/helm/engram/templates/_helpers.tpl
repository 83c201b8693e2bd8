{{/* Names. */}}
{{- define "engram.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "engram.fullname" -}}
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

{{- define "engram.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; selectors add app.kubernetes.io/component. */}}
{{- define "engram.labels" -}}
helm.sh/chart: {{ include "engram.chart" . }}
{{ include "engram.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "engram.selectorLabels" -}}
app.kubernetes.io/name: {{ include "engram.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "engram.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "engram.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "engram.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "engram.fullname" . }}
{{- else }}
{{- required "secrets.existingSecret (or secrets.create=true) is required" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{- define "engram.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Environment of the API and worker containers: the config file, and every
secret as a file (ENGRAM_<KEY>_FILE). Only ENGRAM_* names that are engram
configuration keys may appear here: unknown keys stop engram at start-up.
*/}}
{{- define "engram.env" -}}
- name: ENGRAM_CONFIG
  value: /etc/engram/engram.toml
- name: ENGRAM_POSTGRES__URL_FILE
  value: /run/secrets/engram/postgres-url
- name: ENGRAM_NATS__URL_FILE
  value: /run/secrets/engram/nats-url
- name: ENGRAM_REDIS__URL_FILE
  value: /run/secrets/engram/redis-url
{{- if .Values.config.auth.jwt.hs256 }}
- name: ENGRAM_AUTH__JWT__HS256_SECRET_FILE
  value: /run/secrets/engram/jwt-hs256-secret
{{- end }}
{{- if and .Values.config.llm.enabled .Values.config.llm.apiKey }}
- name: ENGRAM_LLM__API_KEY_FILE
  value: /run/secrets/engram/llm-api-key
{{- end }}
{{- if .Values.config.objects.s3.enabled }}
- name: ENGRAM_S3__ACCESS_KEY_ID_FILE
  value: /run/secrets/engram/s3-access-key-id
- name: ENGRAM_S3__SECRET_ACCESS_KEY_FILE
  value: /run/secrets/engram/s3-secret-access-key
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "engram.volumeMounts" -}}
- name: config
  mountPath: /etc/engram
  readOnly: true
- name: secrets
  mountPath: /run/secrets/engram
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "engram.volumes" -}}
- name: config
  configMap:
    name: {{ include "engram.fullname" . }}
- name: secrets
  secret:
    secretName: {{ include "engram.secretName" . }}
    defaultMode: 0440
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every engram pod. */}}
{{- define "engram.podSpecCommon" -}}
serviceAccountName: {{ include "engram.serviceAccountName" . }}
automountServiceAccountToken: false
# Service links would put ENGRAM_*_SERVICE_HOST-style variables in the
# environment of every pod next to a Service named engram...: engram reads
# ENGRAM_* variables as configuration and refuses unknown keys.
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
