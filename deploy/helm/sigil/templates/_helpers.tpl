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

{{/* Where the OIDC server's kubernetes.io/tls Secret is mounted. */}}
{{- define "sigil.oidcTlsDir" -}}/var/run/sigil/oidc-tls{{- end -}}

{{/* True (non-empty) when the OIDC server is on and serves HTTPS (oidc.tls.enabled is
anything but false). */}}
{{- define "sigil.oidcTls" -}}
{{- if and .Values.oidc.enabled (ne (toString .Values.oidc.tls.enabled) "false") -}}
true
{{- end -}}
{{- end -}}

{{/*
Refuses JWT/OIDC values that Sigil would refuse at start (better a failed render than a
crash-looping pod), and the spellings of other charts, which Helm would silently ignore.
Renders nothing.
*/}}
{{- define "sigil.checkJwtOidc" -}}
{{- if hasKey .Values.jwt "keyId" -}}
{{- fail "jwt.keyId is not a value of this chart: the key id is jwt.keyID (Dapr's spelling)" -}}
{{- end -}}
{{- if hasKey .Values.oidc "port" -}}
{{- fail "oidc.port is not a value of this chart: the OIDC port is oidc.server.port (Dapr's name)" -}}
{{- end -}}
{{- if .Values.oidc.enabled -}}
{{- if not .Values.jwt.enabled -}}
{{- fail "oidc.enabled needs jwt.enabled: the OIDC server publishes the keys that sign JWT-SVIDs, and Sigil refuses --oidc-enabled without --jwt-enabled" -}}
{{- end -}}
{{- if not (or .Values.jwt.issuer .Values.oidc.allowedHosts) -}}
{{- fail "oidc.enabled needs jwt.issuer (a fixed issuer URL) or oidc.allowedHosts (the host names the OIDC endpoint answers for): without either the issuer in the discovery document would follow each request's Host header, and Sigil refuses to start so in kubernetes mode" -}}
{{- end -}}
{{- if include "sigil.oidcTls" . -}}
{{- if not .Values.oidc.tls.secretName -}}
{{- fail "oidc.enabled serves HTTPS by default and needs oidc.tls.secretName: a kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace, e.g. from cert-manager; or set oidc.tls.enabled=false to serve plain HTTP behind a TLS-terminating proxy" -}}
{{- end -}}
{{- else if .Values.oidc.tls.secretName -}}
{{- fail "oidc.tls.secretName is set but oidc.tls.enabled is false: Sigil refuses certificate files when it serves plain HTTP; drop one of the two" -}}
{{- end -}}
{{- end -}}
{{- end -}}
