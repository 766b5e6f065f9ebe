{{/* The services, in one place: every per-service template ranges over these. */}}
{{- define "intraday.apps" -}}
gateway forecaster telemetry trading
{{- end -}}

{{- define "intraday.labels" -}}
app.kubernetes.io/part-of: intraday
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "app" "gateway"). */}}
{{- define "intraday.selector" -}}
app.kubernetes.io/name: {{ .app }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "intraday.image" -}}
{{- $repo := ternary .root.Values.image.forecasterRepository .root.Values.image.repository (eq .app "forecaster") -}}
{{ $repo }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}

{{- define "intraday.gcpServiceAccount" -}}
{{- $svc := index .root.Values.services .app -}}
{{- $svc.serviceAccount.gcpServiceAccount | default (printf "intraday-%s@%s.iam.gserviceaccount.com" .app (required "gcp.projectId is required (Workload Identity)" .root.Values.gcp.projectId)) -}}
{{- end -}}

{{/* Does this release use a GCP service (so the pods need Workload Identity)? */}}
{{- define "intraday.usesGcp" -}}
{{- if or (eq .Values.dapr.pubsub.kind "gcp") (eq .Values.dapr.stateStore.kind "memorystore") (eq .Values.dapr.secretStore.kind "gcp") (hasPrefix "gs://" .Values.modelStore) -}}
true
{{- end -}}
{{- end -}}

{{/*
A component's metadata list from one of the files/ (the repository's own
components), with some entries replaced or added and some dropped:
(dict "items" <list> "set" <dict name->entry> "drop" <list of names>).
*/}}
{{- define "intraday.metadata" -}}
{{- $set := .set -}}
{{- $drop := .drop | default list -}}
{{- $seen := list -}}
{{- range .items }}
{{- if hasKey $set .name }}
- {{ index $set .name | toYaml | nindent 2 | trim }}
{{- $seen = append $seen .name }}
{{- else if not (has .name $drop) }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- end }}
{{- range $name, $entry := $set }}
{{- if not (has $name $seen) }}
- {{ toYaml $entry | nindent 2 | trim }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The HPA behaviour (shared by the HPA and KEDA's). */}}
{{- define "intraday.behavior" -}}
{{- $a := .Values.autoscaling -}}
scaleUp:
  stabilizationWindowSeconds: {{ $a.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ $a.scaleUp.percent }}
      periodSeconds: {{ $a.scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ $a.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ $a.scaleDown.pods }}
      periodSeconds: {{ $a.scaleDown.periodSeconds }}
{{- end -}}
