{{- define "modelpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelpilot.fullname" -}}
{{- if .Values.fullnameOverride -}}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{- $name := include "modelpilot.name" . -}}
{{- if contains $name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "modelpilot.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- /* The Deployment's selector: immutable, so it never takes commonLabels or podLabels. */}}
{{- define "modelpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpilot.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{- /* Quoted, so that fromYaml keeps a release called "123" a string. */}}
{{- define "modelpilot.ownLabels" -}}
{{ include "modelpilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end -}}

{{- /* Every object's labels. The chart's own win over commonLabels, so no value can break the selector. */}}
{{- define "modelpilot.labels" -}}
{{- toYaml (merge (include "modelpilot.ownLabels" . | fromYaml) (.Values.commonLabels | default dict)) -}}
{{- end -}}

{{- /* The operator pod's: podLabels before commonLabels, the chart's own before both. */}}
{{- define "modelpilot.podLabels" -}}
{{- toYaml (merge (include "modelpilot.ownLabels" . | fromYaml) (.Values.podLabels | default dict) (.Values.commonLabels | default dict)) -}}
{{- end -}}

{{- define "modelpilot.image" -}}
{{- if .Values.image.digest -}}{{ printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else -}}{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}{{- end -}}
{{- end -}}

{{- define "modelpilot.crdName" -}}modeldeployments.modelpilot.io{{- end -}}

{{- /* Leader election is on when asked for, and always with more than one replica: only one may reconcile. */}}
{{- define "modelpilot.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{- end }}
{{- end -}}

{{- define "modelpilot.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "modelpilot.fullname" .) -}}
{{- end -}}

{{- /* allowedRuntimeImages, fnmatch globs, as a JSON list of RE2 expressions for the admission policy. */}}
{{- define "modelpilot.imageRegexes" -}}
{{- $out := list -}}
{{- range . -}}
{{- $re := regexQuoteMeta . | replace "\\*" ".*" | replace "\\?" "." | replace "\\[!" "[^" | replace "\\[" "[" | replace "\\]" "]" -}}
{{- $out = append $out (printf "(?s)^%s$" $re) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
