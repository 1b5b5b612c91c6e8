{{/*
Objects in the release namespace carry Dapr's names (Service dapr-sentry and the trust
bundle must; the rest follow so that Dapr's tooling, which looks for `dapr-sentry`, finds
Sigil). Cluster-scoped objects get the namespace in their name so that two installs, or
Dapr's own `dapr-sentry` ClusterRole, never collide.
*/}}
{{- define "sigil.name" -}}dapr-sentry{{- end -}}

{{- define "sigil.clusterName" -}}
{{- printf "sigil-dapr-sentry-%s" .Release.Namespace | trunc 253 -}}
{{- end -}}

{{- define "sigil.trustBundle" -}}dapr-trust-bundle{{- end -}}

{{- define "sigil.selectorLabels" -}}
app.kubernetes.io/name: sigil
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- define "sigil.labels" -}}
{{ include "sigil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: certificate-authority
app.kubernetes.io/part-of: dapr
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app: dapr-sentry
{{- end -}}

{{- define "sigil.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the user brings their own CA; fails on a partial set. */}}
{{- define "sigil.byoCA" -}}
{{- $root := .Values.tls.root.certPEM -}}
{{- $cert := .Values.tls.issuer.certPEM -}}
{{- $key := .Values.tls.issuer.keyPEM -}}
{{- if or $root $cert $key -}}
{{- if not (and $root $cert $key) -}}
{{- fail "tls.root.certPEM, tls.issuer.certPEM and tls.issuer.keyPEM must be given together" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}
