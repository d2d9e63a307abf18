{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "gptj.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The InferenceService name; KServe appends "-predictor" (and more) to it, so keep it short. */}}
{{- define "gptj.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gptj.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: app.kubernetes.io/* on everything; selector labels never change between upgrades. */}}
{{- define "gptj.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gptj.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gptj.labels" -}}
helm.sh/chart: {{ include "gptj.chart" . }}
{{ include "gptj.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gptj
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels on the InferenceService and its pods. KServe copies the InferenceService's labels and
annotations onto the pod template (pkg/controller/v1beta1/inferenceservice/components/predictor.go
L498-519 at v0.20.0; Knative's revision template: reconcilers/knative/ksvc_reconciler.go L166-205), so
nothing here may change with the chart's version: in Knative mode every change is a new revision (in
prod a canary), in Standard mode a rollout. helm.sh/chart and app.kubernetes.io/version stay off. */}}
{{- define "gptj.stableLabels" -}}
{{ include "gptj.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gptj
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* KServe labels every predictor pod with the InferenceService's name: the stable way to select them. */}}
{{- define "gptj.podSelector" -}}
serving.kserve.io/inferenceservice: {{ include "gptj.fullname" . }}
{{- end }}

{{- define "gptj.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express ----------------------------------------------------------- */}}

{{- define "gptj.validate" -}}
{{- if gt (int .Values.replicas.min) (int .Values.replicas.max) }}
{{- fail (printf "replicas.min (%d) must be <= replicas.max (%d)" (int .Values.replicas.min) (int .Values.replicas.max)) }}
{{- end }}
{{- if and (ne .Values.deploymentMode "Knative") (not (kindIs "invalid" .Values.canaryTrafficPercent)) }}
{{- fail "canaryTrafficPercent needs deploymentMode: Knative (KServe's canary rollouts are Knative revisions)" }}
{{- end }}
{{- if and (eq .Values.deploymentMode "Standard") (eq (int .Values.replicas.min) 0) }}
{{- fail "replicas.min 0 (scale to zero) needs deploymentMode: Knative" }}
{{- end }}
{{- if and (eq .Values.deploymentMode "Knative") (has .Values.autoscaling.metric (list "cpu" "memory")) }}
{{- fail "autoscaling.metric cpu/memory is for Standard mode with autoscaling.standardClass hpa; Knative scales on concurrency or rps" }}
{{- end }}
{{- if and (eq .Values.deploymentMode "Standard") (eq .Values.autoscaling.standardClass "hpa") (has .Values.autoscaling.metric (list "concurrency" "rps")) }}
{{- fail "autoscaling.standardClass hpa scales on cpu or memory; set autoscaling.metric accordingly" }}
{{- end }}
{{- if eq .Values.deploymentMode "Standard" }}
{{- $stop := add (int .Values.serving.preStopSleepSeconds) (int .Values.serving.drainTimeoutSeconds) 5 }}
{{- if gt $stop (int .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least serving.preStopSleepSeconds + serving.drainTimeoutSeconds + 5 (%d): the pod would be killed while it drains" (int .Values.terminationGracePeriodSeconds) $stop) }}
{{- end }}
{{- else }}
{{- /* Knative sets the grace period to the revision timeout (knative.dev/serving v0.48.1
  pkg/reconciler/revision/resources/deploy.go L302) and its preStop waits for queue-proxy's drain,
  30 s (pkg/queue/sharedmain/main.go L67, L314), before our container gets SIGTERM. */}}
{{- $stop := add 30 (int .Values.serving.drainTimeoutSeconds) 5 }}
{{- if gt $stop (int .Values.timeoutSeconds) }}
{{- fail (printf "Knative mode: timeoutSeconds (%d) is the pod's grace period and must be at least 30 (queue-proxy's drain) + serving.drainTimeoutSeconds + 5 (%d)" (int .Values.timeoutSeconds) $stop) }}
{{- end }}
{{- if gt (int .Values.timeoutSeconds) 600 }}
{{- fail "Knative mode: timeoutSeconds above 600 is refused by Knative unless its config-defaults max-revision-timeout-seconds is raised; the chart allows at most 600" }}
{{- end }}
{{- end }}
{{- if and (ne .Values.deploymentMode "Standard") (ne .Values.autoscaling.standardClass "none") }}
{{- fail "autoscaling.standardClass applies to deploymentMode Standard only; Knative scales with autoscaling.metric and target" }}
{{- end }}
{{- if and .Values.storageContainer.create (not .Values.storageContainer.name) }}
{{- fail "storageContainer.create needs storageContainer.name" }}
{{- end }}
{{- if and .Values.serving.requestTimeoutSeconds (ge (int .Values.serving.requestTimeoutSeconds) (int .Values.timeoutSeconds)) }}
{{- fail "serving.requestTimeoutSeconds must be below timeoutSeconds, so a slow request gets the predictor's 504 rather than the gateway's" }}
{{- end }}
{{- if and .Values.servingRuntime.create (ne .Values.predictorForm "runtime") }}
{{- fail "servingRuntime.create needs predictorForm: runtime" }}
{{- end }}
{{- include "gptj.validatePlatform" . }}
{{- end }}

{{/* Checks of issue 21: what the platform (storage, monitoring, autoscaling) does with our objects. */}}
{{- define "gptj.validatePlatform" -}}
{{- $metrics := .Values.metrics }}
{{- if and $metrics.podMonitor.enabled $metrics.serviceMonitor.enabled }}
{{- fail "metrics.podMonitor and metrics.serviceMonitor both scrape the same pods: every series would be stored twice (and KEDA's load counted twice); enable one" }}
{{- end }}
{{- if and $metrics.serviceMonitor.enabled (eq .Values.deploymentMode "Knative") }}
{{- /* Knative's Services target queue-proxy's ports, never the user container's 8080 (knative/serving
  v0.48.1 pkg/reconciler/serverlessservice/resources/services.go MakePrivateService): no targets. */}}
{{- fail "metrics.serviceMonitor finds no targets in Knative mode (Knative's Services point at queue-proxy, not at 8080); use metrics.podMonitor" }}
{{- end }}
{{- $uri := .Values.model.storageUri }}
{{- if and (eq .Values.podSecurityStandard "restricted") $uri (not (hasPrefix "pvc://" $uri)) (not .Values.storageContainer.name) }}
{{- fail "podSecurityStandard restricted: a download needs storageContainer.name (e.g. gptj-hf from manifests/clusterstoragecontainer-hf.yaml). KServe's default storage initializer has no securityContext, so a restricted namespace refuses the pod, and 1 GiB of memory for a 12 GB download" }}
{{- end }}
{{- if and (eq .Values.deploymentMode "Knative") (eq (int .Values.replicas.min) 0) (gt (int .Values.autoscaling.coldStartSeconds) (int .Values.timeoutSeconds)) }}
{{- /* The activator holds a request for a scaled-to-zero revision at most the revision's timeoutSeconds
  (knative/serving v0.48.1 cmd/activator/main.go L232-246). */}}
{{- fail (printf "replicas.min 0 in Knative mode: a request at zero pods waits in the activator for at most timeoutSeconds (%d), less than autoscaling.coldStartSeconds (%d); keep replicas.min >= 1" (int .Values.timeoutSeconds) (int .Values.autoscaling.coldStartSeconds)) }}
{{- end }}
{{- if and (or .Values.gpu.minMemoryMiB .Values.gpu.minDriverMajor) .Values.affinity.nodeAffinity }}
{{- fail "gpu.minMemoryMiB / gpu.minDriverMajor make the pods' nodeAffinity: put node rules of your own in gpu.nodeSelector, not affinity.nodeAffinity" }}
{{- end }}
{{- end }}

{{/* The predictor container: shared by the custom-container form and the ServingRuntime ---------- */}}

{{- define "gptj.env" -}}
- name: GPTJ_MODEL
  value: {{ if .Values.model.storageUri }}/mnt/models{{ else }}tiny{{ end }}
# A pod that asks for a GPU must use it: cuda exits at start-up with one line when CUDA is not usable
# or the weights do not fit, instead of going Ready on the CPU (predictor/loading/device.py).
- name: GPTJ_DEVICE
  value: {{ if gt (int .Values.gpu.count) 0 }}cuda{{ else }}cpu{{ end }}
- name: GPTJ_DTYPE
  value: {{ .Values.model.dtype | quote }}
- name: GPTJ_MAX_LENGTH_LIMIT
  value: {{ int .Values.model.limits.maxLength | quote }}
- name: GPTJ_MIN_LENGTH_LIMIT
  value: {{ int .Values.model.limits.minLength | quote }}
- name: GPTJ_DEFAULT_NEW_TOKENS
  value: {{ int .Values.model.limits.defaultNewTokens | quote }}
- name: GPTJ_MAX_NUM_BEAMS
  value: {{ int .Values.model.limits.maxNumBeams | quote }}
- name: GPTJ_MAX_RETURN_SEQUENCES
  value: {{ int .Values.model.limits.maxReturnSequences | quote }}
- name: GPTJ_MAX_PROMPTS
  value: {{ int .Values.model.limits.maxPrompts | quote }}
- name: GPTJ_MAX_BODY_BYTES
  value: {{ int .Values.model.limits.maxBodyBytes | quote }}
- name: GPTJ_MAX_BATCH_SIZE
  value: {{ .Values.serving.maxBatchSize | toString | quote }}
- name: GPTJ_MAX_BATCH_TOKENS
  value: {{ int .Values.serving.maxBatchTokens | quote }}
- name: GPTJ_MAX_QUEUED_REQUESTS
  value: {{ int .Values.serving.maxQueuedRequests | quote }}
- name: GPTJ_REQUEST_TIMEOUT_SECONDS
  value: {{ int .Values.serving.requestTimeoutSeconds | quote }}
- name: GPTJ_DRAIN_TIMEOUT_SECONDS
  value: {{ int .Values.serving.drainTimeoutSeconds | quote }}
- name: GPTJ_LOG_PROMPTS
  value: {{ .Values.serving.logPrompts | quote }}
- name: GPTJ_DECODE_PATH
  value: {{ .Values.serving.decodePath | quote }}
- name: GPTJ_CUDA_GRAPHS
  value: {{ .Values.serving.cudaGraphs | quote }}
- name: GPTJ_KV_CACHE_MEMORY_FRACTION
  value: {{ .Values.serving.kvCacheMemoryFraction | quote }}
- name: GPTJ_ENGINE_STALL_SECONDS
  value: {{ int .Values.serving.engineStallSeconds | quote }}
{{- if .Values.auth.existingSecret }}
- name: GPTJ_API_KEYS_FILE
  value: /etc/gptj/auth/keys
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gptj.resources" -}}
requests:
  {{- toYaml .Values.resources.requests | nindent 2 }}
  {{- if gt (int .Values.gpu.count) 0 }}
  {{ .Values.gpu.resourceName }}: {{ .Values.gpu.count | quote }}
  {{- end }}
limits:
  {{- toYaml .Values.resources.limits | nindent 2 }}
  {{- if gt (int .Values.gpu.count) 0 }}
  {{ .Values.gpu.resourceName }}: {{ .Values.gpu.count | quote }}
  {{- end }}
{{- end }}

{{/* Image, arguments, port, probes, security and mounts (env and resources are added by the caller).
     With .grpc (the InferenceService's own container in Standard mode) also the gRPC v2 port. */}}
{{- define "gptj.containerBody" -}}
image: {{ include "gptj.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - --model_name={{ .Values.model.name }}
  - --http_port=8080
  {{- if .grpc }}
  - --grpc_port=8081
  {{- else }}
  # Knative routes a revision through one container port, named for one protocol (http1 or h2c:
  # knative/serving pkg/apis/serving/k8s_validation.go, "more than one container port is set"), so
  # HTTP keeps that port and the image's gRPC listener is turned off; so does the ServingRuntime,
  # which Knative-mode InferenceServices may share.
  - --enable_grpc=false
  {{- end }}
ports:
  # Knative requires the name http1; KServe's Standard mode accepts it too.
  - name: http1
    containerPort: 8080
    protocol: TCP
  {{- if .grpc }}
  # v2 over gRPC. KServe's Standard mode makes every container port a Service port, and one whose name
  # contains "grpc" gets appProtocol kubernetes.io/h2c (kserve v0.20.0
  # pkg/controller/v1beta1/inferenceservice/reconcilers/service/service_reconciler.go L65-78).
  - name: grpc
    containerPort: 8081
    protocol: TCP
  {{- end }}
startupProbe:
  httpGet:
    path: /v2/models/{{ .Values.model.name }}/ready
    port: 8080
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
  timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /v2/models/{{ .Values.model.name }}/ready
    port: 8080
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /v2/health/live
    port: 8080
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: cache
    mountPath: /cache
  - name: tmp
    mountPath: /tmp
  - name: dshm
    mountPath: /dev/shm
{{- if .Values.auth.existingSecret }}
  # The whole volume, not a subPath: the kubelet then swaps in a rotated Secret's new keys.
  - name: api-keys
    mountPath: /etc/gptj/auth
    readOnly: true
{{- end }}
{{- end }}

{{- define "gptj.volumes" -}}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.cacheSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
{{- if .Values.auth.existingSecret }}
- name: api-keys
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    items:
      - key: {{ .Values.auth.existingSecretKey }}
        path: keys
    defaultMode: 288  # 0440: the owner and the pod's fsGroup may read it
{{- end }}
{{- end }}

{{/* Pod-level fields of the predictor. */}}
{{- define "gptj.podFields" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- if eq .Values.deploymentMode "Standard" }}
{{- /* Knative refuses it (knative.dev/serving v0.48.1 pkg/apis/serving/fieldmask.go L289-292). */}}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- with .Values.serviceAccount.name }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $gpu := gt (int .Values.gpu.count) 0 }}
{{- with merge (dict) .Values.nodeSelector (ternary .Values.gpu.nodeSelector (dict) $gpu) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat (ternary .Values.gpu.tolerations (list) $gpu) .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.gpu.runtimeClassName }}
{{- if $gpu }}
runtimeClassName: {{ . }}
{{- end }}
{{- end }}
{{- with include "gptj.affinity" . | fromYaml }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* The pods' affinity: the values' own, plus node rules on GPU Feature Discovery's labels (NVIDIA
k8s-device-plugin v0.20.0 internal/lm/resource.go NewGPUResourceLabeler: nvidia.com/gpu.memory in MiB;
internal/lm/nvml.go L125-141: nvidia.com/cuda.driver-version.major). Gt takes one integer. */}}
{{- define "gptj.affinity" -}}
{{- $affinity := deepCopy .Values.affinity }}
{{- $rules := list }}
{{- if gt (int .Values.gpu.count) 0 }}
{{- with .Values.gpu.minMemoryMiB }}
{{- $rules = append $rules (dict "key" "nvidia.com/gpu.memory" "operator" "Gt" "values" (list (toString (sub (int .) 1)))) }}
{{- end }}
{{- with .Values.gpu.minDriverMajor }}
{{- $rules = append $rules (dict "key" "nvidia.com/cuda.driver-version.major" "operator" "Gt" "values" (list (toString (sub (int .) 1)))) }}
{{- end }}
{{- end }}
{{- if $rules }}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list (dict "matchExpressions" $rules)))) }}
{{- end }}
{{- if $affinity }}
{{- toYaml $affinity }}
{{- end }}
{{- end }}

{{/* KEDA's Prometheus query: the prompts waiting and generating in this release's predictor pods, each
pod's series taken once (max by pod) before the sum: Prometheus keeps one copy per scrape job that finds
the pod (annotations, the annotated Service KServe makes in Standard mode, a PodMonitor). */}}
{{- define "gptj.kedaQuery" -}}
{{- if .Values.autoscaling.keda.query }}
{{- .Values.autoscaling.keda.query }}
{{- else }}
{{- $selector := printf "namespace=\"%s\", pod=~\"%s-predictor-.*\"" .Release.Namespace (include "gptj.fullname" .) }}
{{- printf "sum(max by (pod) (gptj_queue_size{%s}))\n+ sum(max by (pod) (gptj_requests_running{%s}))" $selector $selector }}
{{- end }}
{{- end }}

{{/* Knative: seconds a new revision may take to become ready (startup budget + pull and download). */}}
{{- define "gptj.progressDeadline" -}}
{{- $startup := mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- printf "%ds" (add $startup .Values.rollout.pullAndDownloadSeconds) }}
{{- end }}

{{/* Standard mode: keep serving while Kubernetes takes the pod out of its endpoints; SIGTERM (and the
drain) follow. Not in Knative mode, which refuses lifecycle (knative.dev/serving v0.48.1
pkg/apis/serving/fieldmask.go L332-334), nor in the ServingRuntime, which Knative-mode
InferenceServices may share: the InferenceService adds it. */}}
{{- define "gptj.lifecycle" -}}
{{- if and .Values.serving.preStopSleepSeconds (eq .Values.deploymentMode "Standard") }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ int .Values.serving.preStopSleepSeconds }}"]
{{- end }}
{{- end }}
