{{/* Names. fullname is cut so that "<fullname>-selfsigned" still fits a 63-character name. */}}
{{- define "serverfirst.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The Secret the Deployment mounts, whatever the certificate source. */}}
{{- define "serverfirst.tlsSecretName" -}}
{{- if eq .Values.certificates.source "secret" }}
{{- required "certificates.secretName is required with certificates.source=secret" .Values.certificates.secretName }}
{{- else }}
{{- printf "%s-tls" (include "serverfirst.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Service's DNS names, which the serving certificate is for. */}}
{{- define "serverfirst.dnsNames" -}}
{{- $service := include "serverfirst.fullname" . }}
{{- $namespace := .Release.Namespace }}
{{- list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.cluster.local" $service $namespace) | toJson }}
{{- end }}

{{/*
Labels of one component's pods, selected on by its Deployment (and Service, PDB, ServiceMonitor).
Called with (dict "root" $ "component" "webhook").
*/}}
{{- define "serverfirst.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "serverfirst.componentLabels" -}}
{{ include "serverfirst.componentSelectorLabels" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/* The webhook's: what every object of the chart carries. */}}
{{- define "serverfirst.selectorLabels" -}}
{{ include "serverfirst.componentSelectorLabels" (dict "root" . "component" "webhook") }}
{{- end }}

{{- define "serverfirst.labels" -}}
{{ include "serverfirst.componentLabels" (dict "root" . "component" "webhook") }}
{{- end }}

{{/*
What every serverfirst pod spec shares, whichever component: image pull secrets, scheduling and
the restricted pod securityContext. Indented by the caller.
*/}}
{{- define "serverfirst.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  # Group that owns the mounted Secret files, so the non-root process can read them.
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A component's pod affinity: the affinity value, else its replicas spread over nodes. Called with
(dict "root" $ "component" "webhook"). Indented by the caller.
*/}}
{{- define "serverfirst.affinity" -}}
affinity:
  {{- if .root.Values.affinity }}
  {{- toYaml .root.Values.affinity | nindent 2 }}
  {{- else }}
  podAntiAffinity:
    # Preferred, not required: the replicas spread over nodes where they can, and a
    # single-node cluster still runs them all.
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "serverfirst.componentSelectorLabels" . | nindent 14 }}
  {{- end }}
{{- end }}

{{/* The serverfirst image, and the container securityContext every component runs with. */}}
{{- define "serverfirst.containerCommon" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop:
      - ALL
{{- end }}

{{/*
Fails when the cluster does not serve an API a value asked for (a feature is never skipped
silently), naming both ways out: installing it, or declaring it to an offline render. Helm's
capabilities hold each group/version and each group/version/Kind of a live cluster's discovery
(pkg/action/action.go, GetVersionSet), or exactly what `helm template --api-versions` names;
`Has` matches one whole entry (pkg/chart/common/capabilities.go, VersionSet.Has). So either form
is accepted. Called with (list $ "group/version" (list "Kind" ...) "what needs it" "what to install").
*/}}
{{- define "serverfirst.requireApi" -}}
{{- $root := index . 0 }}
{{- $groupVersion := index . 1 }}
{{- $missing := list }}
{{- if not ($root.Capabilities.APIVersions.Has $groupVersion) }}
{{- range $kind := index . 2 }}
{{- if not ($root.Capabilities.APIVersions.Has (printf "%s/%s" $groupVersion $kind)) }}
{{- $missing = append $missing $kind }}
{{- end }}
{{- end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "%s needs the API %s (%s), which the cluster does not serve. Install %s first; to render without a cluster, pass --api-versions %s to helm template" (index . 3) $groupVersion (join ", " $missing) (index . 4) $groupVersion) }}
{{- end }}
{{- end }}

{{/* What the webhooks intercept: the same rules for every webhook of every mode. */}}
{{- define "serverfirst.webhookRules" -}}
# Pods: exclusions from capture, decided once when the pod is created.
- apiGroups: [""]
  apiVersions: ["v1"]
  resources: ["pods"]
  operations: ["CREATE"]
  scope: Namespaced
# Services: `appProtocol: tcp` on server-first ports, so meshed clients do not sniff them;
# UPDATE too, since ports are added to a Service over its life.
- apiGroups: [""]
  apiVersions: ["v1"]
  resources: ["services"]
  operations: ["CREATE", "UPDATE"]
  scope: Namespaced
{{- end }}

{{/*
The webhooks of each mode: name, service path, and the serverfirst.dev/mode namespace label they
require (empty: every namespace but the excluded ones). The same as the kustomize overlays.
*/}}
{{- define "serverfirst.modeWebhooks" -}}
{{- $enforce := dict "name" "mutate.serverfirst.dev" "path" "/mutate" }}
{{- $audit := dict "name" "audit.serverfirst.dev" "path" "/audit" }}
{{- if eq .Values.mode "namespace-opt-in" }}
{{- list (merge (dict "modeLabel" "enforce") $enforce) (merge (dict "modeLabel" "audit") $audit) | toYaml }}
{{- else if eq .Values.mode "cluster-wide" }}
{{- list $enforce | toYaml }}
{{- else if eq .Values.mode "cluster-audit" }}
{{- list $audit | toYaml }}
{{- else }}
{{- fail (printf "mode %q: must be namespace-opt-in, cluster-wide or cluster-audit" .Values.mode) }}
{{- end }}
{{- end }}

{{/*
webhook.extraNamespaceSelector as matchExpressions (matchLabels first, as In with one value), to be
appended to the mode's: a namespace must match all of them.
*/}}
{{- define "serverfirst.extraNamespaceExpressions" -}}
{{- $selector := .Values.webhook.extraNamespaceSelector }}
{{- $expressions := list }}
{{- range $key, $value := $selector.matchLabels }}
{{- $expressions = append $expressions (dict "key" $key "operator" "In" "values" (list $value)) }}
{{- end }}
{{- $expressions = concat $expressions ($selector.matchExpressions | default list) }}
{{- with $expressions }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* The Secret of certificates.source=helm; notAfter is the serving certificate's expiry. */}}
{{- define "serverfirst.helmSecret" }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "serverfirst.labels" .root | nindent 4 }}
  annotations:
    # Read back on upgrade: the certificate is kept until 30 days before this, then renewed.
    serverfirst.dev/not-after: {{ .notAfter | quote }}
type: kubernetes.io/tls
data:
  ca.crt: {{ index .data "ca.crt" }}
  tls.crt: {{ index .data "tls.crt" }}
  tls.key: {{ index .data "tls.key" }}
{{- end }}
