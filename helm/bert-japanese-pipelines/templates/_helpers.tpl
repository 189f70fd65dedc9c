{{/* Names and labels shared by every manifest. */}}
{{- define "bertja.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bertja.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "bertja.serviceAccountName" -}}
{{- default (include "bertja.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Full reference of one runtime image: (dict "key" "data" "root" $). */}}
{{- define "bertja.image" -}}
{{- $v := .root.Values.image -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $v.registry) (index $v.repositories .key) $v.tag -}}
{{- end -}}

{{/* pipeline_root: explicit, else derived from the bucket, else the cluster's default. */}}
{{- define "bertja.pipelineRoot" -}}
{{- if .Values.pipeline.root -}}
{{- .Values.pipeline.root -}}
{{- else if .Values.gcs -}}
{{- printf "gs://%s/bert-japanese/pipeline-root" .Values.gcs.bucket -}}
{{- end -}}
{{- end -}}

{{/* Checks across values that a JSON schema cannot state clearly. */}}
{{- define "bertja.validate" -}}
{{- if and (has .Values.pipeline.profile (list "gcp" "gke-gpu" "gke-trainjob")) (not (hasPrefix "gs://" (include "bertja.pipelineRoot" .))) -}}
{{- fail (printf "pipeline.profile %s needs a gs:// pipeline root: set gcs.bucket (or pipeline.root to gs://...)" .Values.pipeline.profile) -}}
{{- end -}}
{{- if and (eq .Values.pipeline.profile "gke-trainjob") (not .Values.trainjob.enabled) -}}
{{- fail "pipeline.profile gke-trainjob runs Kubeflow Trainer TrainJobs: set trainjob.enabled=true (their RBAC)" -}}
{{- end -}}
{{- if and .Values.pipeline.useChartServiceAccount (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "pipeline.useChartServiceAccount with serviceAccount.create=false needs serviceAccount.name (an existing service account)" -}}
{{- end -}}
{{- if .Values.tpuJanitor.enabled -}}
{{- if not (include "bertja.janitorProject" .) -}}
{{- fail "tpuJanitor.enabled needs tpuJanitor.project or pipeline.parameters.gcp_project (where the TPU VMs are)" -}}
{{- end -}}
{{- if not (include "bertja.janitorZone" .) -}}
{{- fail "tpuJanitor.enabled needs tpuJanitor.zone or pipeline.parameters.gcp_zone (where the TPU VMs are)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.trainjob.janitor.enabled (not .Values.trainjob.enabled) -}}
{{- fail "trainjob.janitor.enabled needs trainjob.enabled (the TrainJob RBAC it acts with)" -}}
{{- end -}}
{{- end -}}

{{/* The TPU janitor's project and zone: explicit, else the pipeline's parameters. */}}
{{- define "bertja.janitorProject" -}}
{{- .Values.tpuJanitor.project | default (index .Values.pipeline.parameters "gcp_project") | default "" -}}
{{- end -}}

{{- define "bertja.janitorZone" -}}
{{- .Values.tpuJanitor.zone | default (index .Values.pipeline.parameters "gcp_zone") | default "" -}}
{{- end -}}

{{/* One container argument from values: quoted, and "$" doubled so Kubernetes never expands
"$(VAR)" inside it. */}}
{{- define "bertja.arg" -}}
{{- . | toString | replace "$" "$$" | quote -}}
{{- end -}}

{{/* --param NAME=VALUE arguments, one list item each (no shell involved). */}}
{{- define "bertja.paramArgs" -}}
{{- range $name, $value := .Values.pipeline.parameters }}
- --param
- {{ include "bertja.arg" (printf "%s=%s" $name $value) }}
{{- end }}
{{- end -}}

{{/* One hook container: (dict "name" N "args" LIST-YAML "root" $). */}}
{{- define "bertja.hookContainer" -}}
- name: {{ .name }}
  image: {{ include "bertja.image" (dict "key" "data" "root" .root) }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  command: ["bertja"]
  args:
{{ .args | indent 4 }}
  env:
{{- /* compile reads these: the pipeline's components use the chart's images. */}}
{{- range $var := list "BERTJA_IMAGE_REGISTRY" "BERTJA_IMAGE_TAG" }}
    - name: {{ $var }}
      valueFrom:
        configMapKeyRef:
          name: {{ include "bertja.fullname" $.root }}-defaults
          key: {{ $var }}
{{- end }}
  resources:
{{ toYaml .root.Values.hookJob.resources | indent 4 }}
  securityContext:
{{ toYaml .root.Values.securityContext | indent 4 }}
  volumeMounts:
    - {name: work, mountPath: /work}
    - {name: tmp, mountPath: /tmp}
{{- with include "bertja.kfpTokenMount" .root }}{{ . | nindent 4 }}{{ end }}
{{- end -}}

{{/* Multi-user KFP: the projected service-account token, where kfp.client's
ServiceAccountTokenVolumeCredentials (and `bertja tpu gc`) read it:
/var/run/secrets/kubeflow/pipelines/token, audience pipelines.kubeflow.org. Volume, then mount. */}}
{{- define "bertja.kfpTokenVolume" -}}
{{- if .Values.kfp.multiUser -}}
- name: kfp-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: pipelines.kubeflow.org
          expirationSeconds: 3600
{{- end -}}
{{- end -}}

{{- define "bertja.kfpTokenMount" -}}
{{- if .Values.kfp.multiUser -}}
- {name: kfp-token, mountPath: /var/run/secrets/kubeflow/pipelines, readOnly: true}
{{- end -}}
{{- end -}}

{{/* Argument list (YAML) for one hook action: compile | schedule | submit. The profile goes to
every action: schedule and submit check the run's parameters against it. */}}
{{- define "bertja.hookArgs" -}}
{{- $v := .root.Values -}}
- {{ .action }}
{{- if eq .action "compile" }}
- /work/pipeline.yaml
{{- end }}
- --profile
- {{ include "bertja.arg" $v.pipeline.profile }}
{{- if eq .action "compile" }}
{{- with include "bertja.pipelineRoot" .root }}
- --pipeline-root
- {{ include "bertja.arg" . }}
{{- end }}
{{- else }}
- --pipeline-file
- /work/pipeline.yaml
- --endpoint
- {{ include "bertja.arg" $v.kfp.endpoint }}
- --experiment
- {{ include "bertja.arg" $v.pipeline.experiment }}
{{- with include "bertja.kfpNamespace" .root }}
- --namespace
- {{ include "bertja.arg" . }}
{{- end }}
{{- if $v.pipeline.useChartServiceAccount }}
- --service-account
- {{ include "bertja.arg" (include "bertja.serviceAccountName" .root) }}
{{- end }}
{{- if $v.kfp.multiUser }}
- --multi-user
{{- end }}
{{- end }}
{{- if eq .action "schedule" }}
- --name
- {{ include "bertja.arg" $v.schedule.name }}
- --cron
- {{ include "bertja.arg" $v.schedule.cron }}
- --max-concurrency
- {{ $v.schedule.maxConcurrency | default 1 | quote }}
{{- end }}
{{- include "bertja.paramArgs" .root }}
{{- end -}}

{{/* The KFP namespace runs go to: explicit; in multi-user mode, the release's namespace. */}}
{{- define "bertja.kfpNamespace" -}}
{{- if .Values.kfp.namespace -}}
{{- .Values.kfp.namespace -}}
{{- else if .Values.kfp.multiUser -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* A janitor CronJob (`bertja tpu gc`, `bertja trainjob gc`) in the control image:
(dict "root" $ "component" NAME "janitor" VALUES "args" LIST ["kubeApi" true]). The KFP endpoint,
minimum age, dry run and multi-user flags follow ARGS; "kubeApi" mounts a projected Kubernetes API
token where the in-cluster client looks (the pod's only API access; automounting stays off). */}}
{{- define "bertja.janitorCronJob" -}}
{{- $root := .root -}}
{{- $j := .janitor -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "bertja.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "bertja.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  schedule: {{ $j.schedule | quote }}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    spec:
      # The next schedule is the retry; a failed pod stays for its logs.
      backoffLimit: 0
      activeDeadlineSeconds: {{ $j.activeDeadlineSeconds }}
      template:
        metadata:
          labels:
            {{- include "bertja.labels" $root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
          {{- with $j.podAnnotations }}
          annotations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        spec:
          restartPolicy: Never
          serviceAccountName: {{ include "bertja.serviceAccountName" $root }}
          automountServiceAccountToken: false
          securityContext:
            {{- toYaml $root.Values.podSecurityContext | nindent 12 }}
          containers:
            - name: {{ .component }}
              image: {{ include "bertja.image" (dict "key" "tpu" "root" $root) }}
              imagePullPolicy: {{ $root.Values.image.pullPolicy }}
              command: ["bertja"]
              args:
                {{- range .args }}
                - {{ include "bertja.arg" . }}
                {{- end }}
                - --kfp-endpoint
                - {{ include "bertja.arg" ($j.kfpEndpoint | default $root.Values.kfp.endpoint) }}
                - --min-age
                - {{ $j.minAgeSeconds | quote }}
                {{- if $j.dryRun }}
                - --dry-run
                {{- end }}
                {{- if $root.Values.kfp.multiUser }}
                - --multi-user
                {{- end }}
              resources:
                {{- toYaml $j.resources | nindent 16 }}
              securityContext:
                {{- toYaml $root.Values.securityContext | nindent 16 }}
              volumeMounts:
                - {name: tmp, mountPath: /tmp}
                {{- if .kubeApi }}
                - {name: kube-api-token, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
                {{- end }}
                {{- with include "bertja.kfpTokenMount" $root }}{{ . | nindent 16 }}{{ end }}
          volumes:
            - name: tmp
              emptyDir: {sizeLimit: 64Mi}
            {{- if .kubeApi }}
            - name: kube-api-token
              projected:
                sources:
                  - serviceAccountToken: {path: token, expirationSeconds: 3600}
                  - configMap:
                      name: kube-root-ca.crt
                      items: [{key: ca.crt, path: ca.crt}]
                  - downwardAPI:
                      items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]
            {{- end }}
            {{- with include "bertja.kfpTokenVolume" $root }}{{ . | nindent 12 }}{{ end }}
{{- end -}}

{{/* Who gets the TrainJob rights: the chart's service account and trainjob.serviceAccounts (this
namespace's, e.g. KFP standalone's pipeline-runner when runs do not use the chart's account). */}}
{{- define "bertja.trainjobSubjects" -}}
{{- range prepend .Values.trainjob.serviceAccounts (include "bertja.serviceAccountName" .) | uniq }}
- kind: ServiceAccount
  name: {{ . }}
  namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end -}}
