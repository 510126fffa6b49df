{{/* Names ------------------------------------------------------------- */}}

{{- define "contexten.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "contexten.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "contexten.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels; call with (dict "root" $ "component" "ingest") */}}
{{- define "contexten.selectorLabels" -}}
app.kubernetes.io/name: {{ include "contexten.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "contexten.labels" -}}
helm.sh/chart: {{ include "contexten.chart" .root }}
{{ include "contexten.selectorLabels" . }}
app.kubernetes.io/part-of: contexten
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "contexten.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "contexten.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "contexten.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Workers ------------------------------------------------------------ */}}

{{/* The binary of each worker type (the key under .Values.workers is its stage). */}}
{{- define "contexten.workerBinaries" -}}
context: context-worker
generate: generator-worker
agent: agent-worker
dispatch: dispatcher
{{- end -}}

{{- define "contexten.binary" -}}
{{- get (include "contexten.workerBinaries" . | fromYaml) .stage -}}
{{- end -}}

{{/* Secret keys (environment variable names) each component receives. */}}
{{- define "contexten.componentSecretEnv" -}}
ingest: [GITHUB_WEBHOOK_SECRET, LINEAR_WEBHOOK_SECRET, SLACK_SIGNING_SECRET]
context: [GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY, CACHE_ENCRYPTION_KEY]
generate: [LLM_API_KEY, CACHE_ENCRYPTION_KEY]
agent: [CODEGEN_API_TOKEN]
dispatch: [GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY, LINEAR_API_KEY, SLACK_BOT_TOKEN]
{{- end -}}

{{/* values key under .Values.secrets -> Secret key / environment variable */}}
{{- define "contexten.secretKeys" -}}
githubWebhookSecret: GITHUB_WEBHOOK_SECRET
linearWebhookSecret: LINEAR_WEBHOOK_SECRET
slackSigningSecret: SLACK_SIGNING_SECRET
githubToken: GITHUB_TOKEN
githubAppPrivateKey: GITHUB_APP_PRIVATE_KEY
linearApiKey: LINEAR_API_KEY
slackBotToken: SLACK_BOT_TOKEN
codegenApiToken: CODEGEN_API_TOKEN
llmApiKey: LLM_API_KEY
cacheEncryptionKey: CACHE_ENCRYPTION_KEY
{{- end -}}

{{- define "contexten.secretName" -}}
{{- default (include "contexten.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "contexten.connectionsSecretName" -}}
{{- printf "%s-connections" (include "contexten.fullname" .) -}}
{{- end -}}

{{- define "contexten.amqpSecretName" -}}
{{- if and (eq .Values.rabbitmq.mode "external") .Values.rabbitmq.external.existingSecret -}}
{{- .Values.rabbitmq.external.existingSecret -}}
{{- else -}}
{{- include "contexten.connectionsSecretName" . -}}
{{- end -}}
{{- end -}}

{{- define "contexten.amqpSecretKey" -}}
{{- if and (eq .Values.rabbitmq.mode "external") .Values.rabbitmq.external.existingSecret -}}
{{- .Values.rabbitmq.external.existingSecretKey -}}
{{- else -}}
AMQP_URL
{{- end -}}
{{- end -}}

{{- define "contexten.redisSecretName" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- include "contexten.connectionsSecretName" . -}}
{{- end -}}
{{- end -}}

{{- define "contexten.redisSecretKey" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- else -}}
REDIS_URL
{{- end -}}
{{- end -}}

{{/* Whether the chart creates the connections Secret at all. */}}
{{- define "contexten.connectionsSecretNeeded" -}}
{{- if or (eq .Values.rabbitmq.mode "bundled") (eq .Values.redis.mode "bundled") (and (eq .Values.rabbitmq.mode "external") (not .Values.rabbitmq.external.existingSecret)) (and (eq .Values.redis.mode "external") (not .Values.redis.external.existingSecret)) -}}
true
{{- end -}}
{{- end -}}

{{- define "contexten.apiTokensEnabled" -}}
{{- if or .Values.apiTokens.content .Values.apiTokens.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* "true" when worker autoscaling uses KEDA ScaledObjects. */}}
{{- define "contexten.kedaEnabled" -}}
{{- $mode := .Values.autoscaling.mode -}}
{{- if or (eq $mode "keda") (and (eq $mode "auto") (.Capabilities.APIVersions.Has "keda.sh/v1alpha1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "contexten.terminationGracePeriodSeconds" -}}
{{- add (int .Values.config.shutdownTimeoutSecs) (int .Values.terminationGraceExtraSeconds) -}}
{{- end -}}

{{/* Cross-field rules the JSON schema cannot express; fail with a clear message. */}}
{{- define "contexten.validate" -}}
{{- $components := dict "ingest" .Values.ingest -}}
{{- range $stage, $w := .Values.workers -}}
{{- $_ := set $components (printf "workers.%s" $stage) $w -}}
{{- end -}}
{{- range $path, $c := $components -}}
{{- if gt (int $c.autoscaling.minReplicas) (int $c.autoscaling.maxReplicas) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%v) must not exceed %s.autoscaling.maxReplicas (%v)" $path $c.autoscaling.minReplicas $path $c.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $ports := dict (toString .Values.ingest.port) "ingest.port" -}}
{{- range $stage, $w := .Values.workers -}}
{{- $p := toString $w.healthPort -}}
{{- if hasKey $ports $p -}}
{{- fail (printf "workers.%s.healthPort %s is already used by %s" $stage $p (get $ports $p)) -}}
{{- end -}}
{{- $_ := set $ports $p (printf "workers.%s.healthPort" $stage) -}}
{{- end -}}
{{- if and (eq .Values.rabbitmq.mode "external") (not .Values.rabbitmq.external.url) (not .Values.rabbitmq.external.existingSecret) -}}
{{- fail "rabbitmq.mode is external: set rabbitmq.external.url or rabbitmq.external.existingSecret" -}}
{{- end -}}
{{- if and (eq .Values.redis.mode "external") (not .Values.redis.external.url) (not .Values.redis.external.existingSecret) -}}
{{- fail "redis.mode is external: set redis.external.url or redis.external.existingSecret" -}}
{{- end -}}
{{- if and .Values.apiTokens.content .Values.apiTokens.existingSecret -}}
{{- fail "apiTokens: set content or existingSecret, not both" -}}
{{- end -}}
{{- if and (eq .Values.autoscaling.keda.protocol "http") (eq .Values.rabbitmq.mode "external") (not .Values.autoscaling.keda.httpSecret) -}}
{{- fail "autoscaling.keda.protocol is http with an external RabbitMQ: set autoscaling.keda.httpSecret to a Secret holding the management URL" -}}
{{- end -}}
{{- end -}}

{{/* Pod template ------------------------------------------------------- */}}

{{/*
Pod template of a Contexten service. Call with
  (dict "root" $ "component" "context" "binary" "context-worker" "c" $values
        "portName" "health" "port" 9101 "env" (list ...))
*/}}
{{- define "contexten.podTemplate" -}}
{{- $root := .root -}}
{{- $c := .c -}}
metadata:
  labels:
    {{- include "contexten.labels" (dict "root" $root "component" .component) | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    checksum/secret-values: {{ toJson $root.Values.secrets | sha256sum }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ .port | quote }}
    prometheus.io/path: /metrics
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "contexten.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Longer than SHUTDOWN_TIMEOUT_SECS: in-flight work is finished or requeued
  # before the kubelet sends SIGKILL.
  terminationGracePeriodSeconds: {{ include "contexten.terminationGracePeriodSeconds" $root }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .binary }}
      image: {{ include "contexten.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args: [{{ .binary | quote }}]
      ports:
        - name: {{ .portName }}
          containerPort: {{ .port }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "contexten.fullname" $root }}-config
      env:
        - name: OTEL_SERVICE_NAME
          value: {{ printf "%s%s" $root.Values.config.otel.serviceNamePrefix .binary | quote }}
        - name: AMQP_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.amqpSecretName" $root }}
              key: {{ include "contexten.amqpSecretKey" $root }}
        - name: REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.redisSecretName" $root }}
              key: {{ include "contexten.redisSecretKey" $root }}
        {{- range $key := get (include "contexten.componentSecretEnv" . | fromYaml) (default .component .stage) }}
        - name: {{ $key }}
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.secretName" $root }}
              key: {{ $key }}
              # absent key: the variable stays unset and the provider is disabled
              optional: true
        {{- end }}
        {{- with .env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $c.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        httpGet: { path: /healthz, port: {{ .portName }} }
        periodSeconds: 2
        failureThreshold: 30
      livenessProbe:
        httpGet: { path: /healthz, port: {{ .portName }} }
        periodSeconds: 10
        timeoutSeconds: 3
        failureThreshold: 3
      # /readyz checks the broker, Redis and the breakers.
      readinessProbe:
        httpGet: { path: /readyz, port: {{ .portName }} }
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      {{- with .lifecycle }}
      lifecycle:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $c.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: home
          mountPath: /home/contexten
        {{- with .volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.scratchSizeLimit }}
    - name: home
      emptyDir:
        sizeLimit: 64Mi
    {{- with .volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with (default $root.Values.nodeSelector $c.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $root.Values.tolerations $c.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $root.Values.affinity $c.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* PodDisruptionBudget; call with (dict "root" $ "component" "ingest" "name" "..." "pdb" $pdb) */}}
{{- define "contexten.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "contexten.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .pdb.minAvailable) }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ default 1 .pdb.maxUnavailable }}
  {{- end }}
  {{- if semverCompare ">=1.27-0" .root.Capabilities.KubeVersion.Version }}
  # A pod that is not ready (broker down) must not block node drains.
  unhealthyPodEvictionPolicy: AlwaysAllow
  {{- end }}
  selector:
    matchLabels:
      {{- include "contexten.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end -}}

{{/* HPA on CPU; call with (dict "root" $ "component" "x" "name" "..." "a" $autoscaling) */}}
{{- define "contexten.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- include "contexten.labels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ max 1 (int .a.minReplicas) }}
  maxReplicas: {{ .a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .a.targetCPUUtilizationPercentage }}
{{- end -}}
