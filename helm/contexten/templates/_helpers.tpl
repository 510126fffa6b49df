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

{{/*
Non-secret settings: values path under .Values.config -> the variable and the
components (ingest or a worker stage) whose binary reads it. Each component's
ConfigMap holds only its own; an empty string leaves the variable unset (the
binary's default), a boolean becomes 1/0. README.md "Configuration" documents
every variable; deploy/chart-check checks that each reaches exactly these.
*/}}
{{- define "contexten.configSettings" -}}
# every binary
prefix: {env: CONTEXTEN_PREFIX, to: [ingest, context, generate, agent, dispatch]}
logFormat: {env: LOG_FORMAT, to: [ingest, context, generate, agent, dispatch]}
rustLog: {env: RUST_LOG, to: [ingest, context, generate, agent, dispatch]}
otel.endpoint: {env: OTEL_EXPORTER_OTLP_ENDPOINT, to: [ingest, context, generate, agent, dispatch]}
# the broker runtime: every worker; ingest declares the delay queues and publishes
maxAttempts: {env: MAX_ATTEMPTS, to: [context, generate, agent, dispatch]}
shutdownTimeoutSecs: {env: SHUTDOWN_TIMEOUT_SECS, to: [context, generate, agent, dispatch]}
retryTiersMs: {env: RETRY_TIERS_MS, to: [ingest, context, generate, agent, dispatch]}
payloadInlineLimitBytes: {env: PAYLOAD_INLINE_LIMIT_BYTES, to: [ingest, context, generate, agent, dispatch]}
maxDeliveries: {env: MAX_DELIVERIES, to: [context, generate, agent, dispatch]}
publishConfirmTimeoutMs: {env: PUBLISH_CONFIRM_TIMEOUT_MS, to: [ingest, context, generate, agent, dispatch]}
deadQueueMaxLength: {env: DEAD_QUEUE_MAX_LENGTH, to: [ingest, context, generate, agent, dispatch]}
queueType: {env: QUEUE_TYPE, to: [ingest, context, generate, agent, dispatch]}
quorumDeliveryLimit: {env: QUORUM_DELIVERY_LIMIT, to: [ingest, context, generate, agent, dispatch]}
# a RabbitMQ cluster and Redis Sentinel (docs/operations.md "Running on a cluster")
amqpAddresses: {env: AMQP_ADDRESSES, to: [ingest, context, generate, agent, dispatch]}
redisSentinels: {env: REDIS_SENTINELS, to: [ingest, context, generate, agent, dispatch]}
redisSentinelMaster: {env: REDIS_SENTINEL_MASTER, to: [ingest, context, generate, agent, dispatch]}
redisRecordsSentinelMaster: {env: REDIS_RECORDS_SENTINEL_MASTER, to: [ingest, context, generate, agent, dispatch]}
redisWaitReplicas: {env: REDIS_WAIT_REPLICAS, to: [ingest, context, generate, agent, dispatch]}
redisWaitTimeoutMs: {env: REDIS_WAIT_TIMEOUT_MS, to: [ingest, context, generate, agent, dispatch]}
# shared by several binaries
allowLocalRepos: {env: CONTEXTEN_ALLOW_LOCAL_REPOS, to: [ingest, context, generate, dispatch]}
outboundAllow: {env: CONTEXTEN_OUTBOUND_ALLOW, to: [ingest, context, generate, dispatch]}
gitAllowSsh: {env: CONTEXTEN_GIT_ALLOW_SSH, to: [ingest, context, generate]}
llmModel: {env: LLM_MODEL, to: [context, generate]}
githubApiUrl: {env: GITHUB_API_URL, to: [ingest, context, dispatch]}
githubAppId: {env: GITHUB_APP_ID, to: [ingest, dispatch]}
# ingest
commandPrefix: {env: CONTEXTEN_COMMAND_PREFIX, to: [ingest]}
botLogin: {env: CONTEXTEN_BOT_LOGIN, to: [ingest]}
linearBotUserId: {env: LINEAR_BOT_USER_ID, to: [ingest]}
triggerLabel: {env: CONTEXTEN_TRIGGER_LABEL, to: [ingest]}
allowedAssociations: {env: CONTEXTEN_ALLOWED_ASSOCIATIONS, to: [ingest]}
slackTeamIds: {env: SLACK_TEAM_IDS, to: [ingest]}
slackAppId: {env: SLACK_APP_ID, to: [ingest]}
slackUserIds: {env: SLACK_USER_IDS, to: [ingest]}
slackChannelIds: {env: SLACK_CHANNEL_IDS, to: [ingest]}
linearOrganizationId: {env: LINEAR_ORGANIZATION_ID, to: [ingest]}
linearTeamIds: {env: LINEAR_TEAM_IDS, to: [ingest]}
githubAllowedRepositories: {env: GITHUB_ALLOWED_REPOSITORIES, to: [ingest]}
gitServers: {env: CONTEXTEN_GIT_SERVERS, to: [ingest]}
ingestRequesterLimit: {env: INGEST_REQUESTER_LIMIT, to: [ingest]}
ingestRequesterWindowSecs: {env: INGEST_REQUESTER_WINDOW_SECS, to: [ingest]}
ingestWorkerThreads: {env: INGEST_WORKER_THREADS, to: [ingest]}
ingestMaxBodyBytes: {env: INGEST_MAX_BODY_BYTES, to: [ingest]}
ingestDedupTtlSecs: {env: INGEST_DEDUP_TTL_SECS, to: [ingest]}
ingestConversationTtlSecs: {env: INGEST_CONVERSATION_TTL_SECS, to: [ingest]}
slackTimestampToleranceSecs: {env: SLACK_TIMESTAMP_TOLERANCE_SECS, to: [ingest]}
linearTimestampToleranceSecs: {env: LINEAR_TIMESTAMP_TOLERANCE_SECS, to: [ingest]}
ingestRetryAfterSecs: {env: INGEST_RETRY_AFTER_SECS, to: [ingest]}
ingestRequestTimeoutSecs: {env: INGEST_REQUEST_TIMEOUT_SECS, to: [ingest]}
ingestHeaderTimeoutSecs: {env: INGEST_HEADER_TIMEOUT_SECS, to: [ingest]}
ingestMaxConcurrentRequests: {env: INGEST_MAX_CONCURRENT_REQUESTS, to: [ingest]}
ingestMaxConnections: {env: INGEST_MAX_CONNECTIONS, to: [ingest]}
ingestBodyMemoryBytes: {env: INGEST_BODY_MEMORY_BYTES, to: [ingest]}
# context-worker
contextTopK: {env: CONTEXT_TOP_K, to: [context]}
contextPromptBudgetTokens: {env: CONTEXT_PROMPT_BUDGET_TOKENS, to: [context]}
contextCacheTtlSecs: {env: CONTEXT_CACHE_TTL_SECS, to: [context]}
contextMapTtlSecs: {env: CONTEXT_MAP_TTL_SECS, to: [context]}
contextCacheMaxBytes: {env: CONTEXT_CACHE_MAX_BYTES, to: [context]}
contextGitTimeoutSecs: {env: CONTEXT_GIT_TIMEOUT_SECS, to: [context]}
contextMaxFiles: {env: CONTEXT_MAX_FILES, to: [context]}
contextMaxTotalBytes: {env: CONTEXT_MAX_TOTAL_BYTES, to: [context]}
contextMemoryBudgetBytes: {env: CONTEXT_MEMORY_BUDGET_BYTES, to: [context]}
contextHistoryDepth: {env: CONTEXT_HISTORY_DEPTH, to: [context]}
# generator-worker
llmProvider: {env: LLM_PROVIDER, to: [generate]}
llmBaseUrl: {env: LLM_BASE_URL, to: [generate]}
llmTimeoutSecs: {env: LLM_TIMEOUT_SECS, to: [generate]}
llmMaxTokens: {env: LLM_MAX_TOKENS, to: [generate]}
llmTemperature: {env: LLM_TEMPERATURE, to: [generate]}
llmMaxConcurrency: {env: LLM_MAX_CONCURRENCY, to: [generate]}
llmRequestsPerMin: {env: LLM_REQUESTS_PER_MIN, to: [generate]}
llmTokensPerMin: {env: LLM_TOKENS_PER_MIN, to: [generate]}
llmMaxRetries: {env: LLM_MAX_RETRIES, to: [generate]}
llmRetryBaseMs: {env: LLM_RETRY_BASE_MS, to: [generate]}
llmMaxInlineWaitSecs: {env: LLM_MAX_INLINE_WAIT_SECS, to: [generate]}
llmBreakerFailures: {env: LLM_BREAKER_FAILURES, to: [generate]}
llmBreakerOpenSecs: {env: LLM_BREAKER_OPEN_SECS, to: [generate]}
generatorCacheTtlSecs: {env: GENERATOR_CACHE_TTL_SECS, to: [generate]}
generatorCacheMaxBytes: {env: GENERATOR_CACHE_MAX_BYTES, to: [generate]}
generatorCacheMemoryEntries: {env: GENERATOR_CACHE_MEMORY_ENTRIES, to: [generate]}
generatorGitTimeoutSecs: {env: GENERATOR_GIT_TIMEOUT_SECS, to: [generate]}
generatorContextOnlySource: {env: GENERATOR_CONTEXT_ONLY_SOURCE, to: [generate]}
# agent-worker
codegenApiUrl: {env: CODEGEN_API_URL, to: [agent]}
codegenOrgId: {env: CODEGEN_ORG_ID, to: [agent]}
codegenTimeoutSecs: {env: CODEGEN_TIMEOUT_SECS, to: [agent]}
codegenCreateLimit: {env: CODEGEN_CREATE_LIMIT, to: [agent]}
codegenCreateWindowMs: {env: CODEGEN_CREATE_WINDOW_MS, to: [agent]}
codegenRequestLimit: {env: CODEGEN_REQUEST_LIMIT, to: [agent]}
codegenRequestWindowMs: {env: CODEGEN_REQUEST_WINDOW_MS, to: [agent]}
codegenBreakerFailures: {env: CODEGEN_BREAKER_FAILURES, to: [agent]}
codegenBreakerOpenMs: {env: CODEGEN_BREAKER_OPEN_MS, to: [agent]}
codegenBreakerProbeTimeoutMs: {env: CODEGEN_BREAKER_PROBE_TIMEOUT_MS, to: [agent]}
agentPollInitialMs: {env: AGENT_POLL_INITIAL_MS, to: [agent]}
agentPollMaxMs: {env: AGENT_POLL_MAX_MS, to: [agent]}
agentMaxRunSecs: {env: AGENT_MAX_RUN_SECS, to: [agent]}
agentLimitMaxHoldMs: {env: AGENT_LIMIT_MAX_HOLD_MS, to: [agent]}
agentMaxRunsPerRequester: {env: AGENT_MAX_RUNS_PER_REQUESTER, to: [agent]}
# dispatcher
githubAppInstallationId: {env: GITHUB_APP_INSTALLATION_ID, to: [dispatch]}
linearApiUrl: {env: LINEAR_API_URL, to: [dispatch]}
slackApiUrl: {env: SLACK_API_URL, to: [dispatch]}
gitlabApiUrl: {env: GITLAB_API_URL, to: [dispatch]}
dispatchHttpTimeoutSecs: {env: DISPATCH_HTTP_TIMEOUT_SECS, to: [dispatch]}
githubWritesPerMinute: {env: GITHUB_WRITES_PER_MINUTE, to: [dispatch]}
githubWritesPerHour: {env: GITHUB_WRITES_PER_HOUR, to: [dispatch]}
slackChannelMessagesPerSecond: {env: SLACK_CHANNEL_MESSAGES_PER_SECOND, to: [dispatch]}
slackCommandReply: {env: SLACK_COMMAND_REPLY, to: [dispatch]}
linearRequestsPerHour: {env: LINEAR_REQUESTS_PER_HOUR, to: [dispatch]}
gitlabRequestsPerMinute: {env: GITLAB_REQUESTS_PER_MINUTE, to: [dispatch]}
dispatchLimitWaitMs: {env: DISPATCH_LIMIT_WAIT_MS, to: [dispatch]}
{{- end -}}

{{/* A setting's value as the environment sees it: booleans 1/0, whole
numbers without an exponent (YAML numbers arrive as float64). */}}
{{- define "contexten.envValue" -}}
{{- if kindIs "bool" . -}}
{{- ternary "1" "0" . -}}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap data of one component; call with (dict "root" $ "component" "ingest"). */}}
{{- define "contexten.componentConfig" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $data := dict -}}
{{- range $path, $s := include "contexten.configSettings" $root | fromYaml -}}
{{- if has $component $s.to -}}
{{- $value := $root.Values.config -}}
{{- range $key := splitList "." $path -}}
{{- $value = get $value $key -}}
{{- end -}}
{{- if or (kindIs "bool" $value) (not (empty (toString $value))) -}}
{{- $_ := set $data $s.env (include "contexten.envValue" $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $component "context" -}}
{{- /* analyses and fetched repositories live on the worker's writable cache volume */ -}}
{{- $_ := set $data "CONTEXT_CACHE_DIR" (printf "%s/context-cache" $root.Values.workers.context.cacheVolume.mountPath) -}}
{{- end -}}
{{- if eq $component "generate" -}}
{{- /* the disk layers live on the worker's writable cache volume */ -}}
{{- $cache := $root.Values.workers.generate.cacheVolume -}}
{{- $_ := set $data "GENERATOR_CACHE_DIR" (ternary (printf "%s/generator-cache" $cache.mountPath) "off" $root.Values.config.generatorDiskCache) -}}
{{- $_ := set $data "GENERATOR_REPO_CACHE_DIR" (printf "%s/repos" $cache.mountPath) -}}
{{- end -}}
{{- if eq $component "ingest" -}}
{{- $_ := set $data "INGEST_FAILED_DELIVERIES_FILE" (printf "%s/failed-deliveries.jsonl" $root.Values.ingest.dataVolume.mountPath) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* The components by values key: ingest and the worker stages. */}}
{{- define "contexten.components" -}}
ingest: ingest
context: context-worker
generate: generator-worker
agent: agent-worker
dispatch: dispatcher
{{- end -}}

{{- define "contexten.configMapName" -}}
{{- printf "%s-%s-config" (include "contexten.fullname" .root) (get (include "contexten.components" .root | fromYaml) .component) -}}
{{- end -}}

{{/* Secret keys (environment variable names) each component receives. */}}
{{- define "contexten.componentSecretEnv" -}}
# ingest: webhook verification, inline API tokens, and the GitHub credentials of
# `ingest redeliver-failed` (run with kubectl exec in an ingest pod)
ingest: [GITHUB_WEBHOOK_SECRET, LINEAR_WEBHOOK_SECRET, SLACK_SIGNING_SECRET, GITLAB_WEBHOOK_SECRET, CONTEXTEN_API_TOKENS, GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY]
# context-worker: private GitHub repositories, sealing its Redis analysis cache
context: [GITHUB_TOKEN, CACHE_ENCRYPTION_KEY]
# generator-worker: private GitHub repositories (applying diffs), sealing its cache
generate: [LLM_API_KEY, CACHE_ENCRYPTION_KEY, GITHUB_TOKEN]
agent: [CODEGEN_API_TOKEN]
dispatch: [GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY, LINEAR_API_KEY, SLACK_BOT_TOKEN, GITLAB_TOKEN, CALLBACK_SIGNING_SECRET]
{{- end -}}

{{/*
The Secret keys of contexten.componentSecretEnv each component's binary also
reads as `<NAME>_FILE` (shared/config's secret_source/secret_value). With
secrets.mountAsFiles these are mounted as files instead of variables; the rest
(ingest's inline CONTEXTEN_API_TOKENS, the context and generator workers'
GITHUB_TOKEN, read from the variable only) stay variables.
*/}}
{{- define "contexten.componentSecretFiles" -}}
ingest: [GITHUB_WEBHOOK_SECRET, LINEAR_WEBHOOK_SECRET, SLACK_SIGNING_SECRET, GITLAB_WEBHOOK_SECRET, GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY]
context: [CACHE_ENCRYPTION_KEY, GITHUB_TOKEN]
generate: [LLM_API_KEY, CACHE_ENCRYPTION_KEY, GITHUB_TOKEN]
agent: [CODEGEN_API_TOKEN]
dispatch: [GITHUB_TOKEN, GITHUB_APP_PRIVATE_KEY, LINEAR_API_KEY, SLACK_BOT_TOKEN, GITLAB_TOKEN, CALLBACK_SIGNING_SECRET]
{{- end -}}

{{/*
How one component gets its credentials; call with (dict "root" $ "key" "ingest").
YAML {env: [keys passed as variables], files: [keys mounted as files]}. Without
secrets.mountAsFiles every key is a variable (an absent key leaves it unset).
With it, a key the binary reads as a file is mounted only when the Secret holds
it (the chart's own: a non-empty value; existingSecret: listed in
existingSecretKeys), since a `<NAME>_FILE` without its file stops the binary.
*/}}
{{- define "contexten.secretWiring" -}}
{{- $root := .root -}}
{{- $s := $root.Values.secrets -}}
{{- $all := get (include "contexten.componentSecretEnv" $root | fromYaml) .key -}}
{{- $fileable := get (include "contexten.componentSecretFiles" $root | fromYaml) .key -}}
{{- $env := list -}}
{{- $files := list -}}
{{- if not $s.mountAsFiles -}}
{{- $env = $all -}}
{{- else -}}
{{- $held := list -}}
{{- if $s.existingSecret -}}
{{- $held = $s.existingSecretKeys -}}
{{- else -}}
{{- range $valueKey, $name := include "contexten.secretKeys" $root | fromYaml -}}
{{- if get $s $valueKey -}}
{{- $held = append $held $name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name := $all -}}
{{- if not (has $name $fileable) -}}
{{- $env = append $env $name -}}
{{- else if has $name $held -}}
{{- $files = append $files $name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "env" $env "files" $files) -}}
{{- end -}}

{{/* values key under .Values.secrets -> Secret key / environment variable */}}
{{- define "contexten.secretKeys" -}}
githubWebhookSecret: GITHUB_WEBHOOK_SECRET
linearWebhookSecret: LINEAR_WEBHOOK_SECRET
slackSigningSecret: SLACK_SIGNING_SECRET
gitlabWebhookSecret: GITLAB_WEBHOOK_SECRET
contextenApiTokens: CONTEXTEN_API_TOKENS
githubToken: GITHUB_TOKEN
githubAppPrivateKey: GITHUB_APP_PRIVATE_KEY
linearApiKey: LINEAR_API_KEY
slackBotToken: SLACK_BOT_TOKEN
gitlabToken: GITLAB_TOKEN
callbackSigningSecret: CALLBACK_SIGNING_SECRET
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

{{/* The Secret and key of REDIS_URL (the cache Redis). */}}
{{- define "contexten.redisSecretName" -}}
{{- with .Values.redis.cache -}}
{{- if and (eq .mode "external") .external.existingSecret -}}
{{- .external.existingSecret -}}
{{- else -}}
{{- include "contexten.connectionsSecretName" $ -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "contexten.redisSecretKey" -}}
{{- with .Values.redis.cache -}}
{{- if and (eq .mode "external") .external.existingSecret -}}
{{- .external.existingSecretKey -}}
{{- else -}}
REDIS_URL
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key of REDIS_RECORDS_URL (the records Redis). */}}
{{- define "contexten.redisRecordsSecretName" -}}
{{- with .Values.redis.records -}}
{{- if and (eq .mode "external") .external.existingSecret -}}
{{- .external.existingSecret -}}
{{- else -}}
{{- include "contexten.connectionsSecretName" $ -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "contexten.redisRecordsSecretKey" -}}
{{- with .Values.redis.records -}}
{{- if and (eq .mode "external") .external.existingSecret -}}
{{- .external.existingSecretKey -}}
{{- else -}}
REDIS_RECORDS_URL
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether the chart creates the connections Secret at all. */}}
{{- define "contexten.connectionsSecretNeeded" -}}
{{- $redisInSecret := false -}}
{{- range $role := list .Values.redis.records .Values.redis.cache -}}
{{- if or (eq $role.mode "bundled") (not $role.external.existingSecret) -}}
{{- $redisInSecret = true -}}
{{- end -}}
{{- end -}}
{{- if or (eq .Values.rabbitmq.mode "bundled") (and (eq .Values.rabbitmq.mode "external") (not .Values.rabbitmq.external.existingSecret)) $redisInSecret -}}
true
{{- end -}}
{{- end -}}

{{- define "contexten.apiTokensEnabled" -}}
{{- if or .Values.apiTokens.content .Values.apiTokens.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "contexten.policyEnabled" -}}
{{- if or .Values.policy.content .Values.policy.existingConfigMap -}}true{{- end -}}
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
{{- range $role := list "records" "cache" -}}
{{- $r := get $.Values.redis $role -}}
{{- if and (eq $r.mode "external") (not $r.external.url) (not $r.external.existingSecret) -}}
{{- fail (printf "redis.%s.mode is external: set redis.%s.external.url or redis.%s.external.existingSecret" $role $role $role) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.apiTokens.content .Values.apiTokens.existingSecret -}}
{{- fail "apiTokens: set content or existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.routingRules.content .Values.routingRules.existingConfigMap -}}
{{- fail "routingRules: set content or existingConfigMap, not both" -}}
{{- end -}}
{{- if and .Values.policy.content .Values.policy.existingConfigMap -}}
{{- fail "policy: set content or existingConfigMap, not both" -}}
{{- end -}}
{{- if and .Values.tls.caBundle.configMap .Values.tls.caBundle.secret -}}
{{- fail "tls.caBundle: set configMap or secret, not both" -}}
{{- end -}}
{{- if and .Values.tls.caBundle.secret .Values.tls.clientCertificate.secret (eq (clean .Values.tls.caBundle.mountPath) (clean .Values.tls.clientCertificate.mountPath)) -}}
{{- fail "tls.caBundle.mountPath and tls.clientCertificate.mountPath must differ" -}}
{{- end -}}
{{- if and .Values.secrets.mountAsFiles .Values.secrets.existingSecret (not .Values.secrets.existingSecretKeys) -}}
{{- fail "secrets.mountAsFiles with secrets.existingSecret: list the keys that Secret holds in secrets.existingSecretKeys (each becomes <NAME>_FILE, and a binary whose file is missing does not start)" -}}
{{- end -}}
{{- if .Values.secrets.mountAsFiles -}}
{{- $secretsPath := clean .Values.secrets.mountPath -}}
{{- $others := list "/tmp" "/home/contexten" .Values.ingest.dataVolume.mountPath .Values.workers.context.cacheVolume.mountPath .Values.workers.generate.cacheVolume.mountPath -}}
{{- if include "contexten.apiTokensEnabled" . }}{{ $others = append $others .Values.apiTokens.mountPath }}{{ end -}}
{{- if or .Values.routingRules.content .Values.routingRules.existingConfigMap }}{{ $others = append $others .Values.routingRules.mountPath }}{{ end -}}
{{- if include "contexten.policyEnabled" . }}{{ $others = append $others .Values.policy.mountPath }}{{ end -}}
{{- if or .Values.tls.caBundle.configMap .Values.tls.caBundle.secret }}{{ $others = append $others .Values.tls.caBundle.mountPath }}{{ end -}}
{{- if .Values.tls.clientCertificate.secret }}{{ $others = append $others .Values.tls.clientCertificate.mountPath }}{{ end -}}
{{- range $other := $others -}}
{{- if eq $secretsPath (clean $other) -}}
{{- fail (printf "secrets.mountPath %s is already a mount of the pods: choose another directory" $secretsPath) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $cfg := .Values.config -}}
{{- /* the agent worker refuses to start otherwise (services/agent-worker/src/settings.rs) */ -}}
{{- if lt (int64 $cfg.agentPollMaxMs) (int64 $cfg.agentPollInitialMs) -}}
{{- fail (printf "config.agentPollMaxMs (%v) must be at least config.agentPollInitialMs (%v)" (int64 $cfg.agentPollMaxMs) (int64 $cfg.agentPollInitialMs)) -}}
{{- end -}}
{{- if le (int64 $cfg.codegenBreakerProbeTimeoutMs) (mul (int64 $cfg.codegenTimeoutSecs) 1000) -}}
{{- fail (printf "config.codegenBreakerProbeTimeoutMs (%v) must be longer than config.codegenTimeoutSecs (%v s)" (int64 $cfg.codegenBreakerProbeTimeoutMs) (int64 $cfg.codegenTimeoutSecs)) -}}
{{- end -}}
{{- /* RETRY_TIERS_MS: 1 to 10 ascending delays, the first above 0 (shared/config) */ -}}
{{- $last := 0 -}}
{{- $tiers := splitList "," (toString $cfg.retryTiersMs) -}}
{{- if gt (len $tiers) 10 -}}
{{- fail (printf "config.retryTiersMs has %d tiers: at most 10" (len $tiers)) -}}
{{- end -}}
{{- range $tiers -}}
{{- if le (int64 (trim .)) (int64 $last) -}}
{{- fail (printf "config.retryTiersMs %q: delays must be ascending and above 0" (toString $cfg.retryTiersMs)) -}}
{{- end -}}
{{- $last = int64 (trim .) -}}
{{- end -}}
{{- if and (eq .Values.autoscaling.keda.protocol "http") (eq .Values.rabbitmq.mode "external") (not .Values.autoscaling.keda.httpSecret) -}}
{{- fail "autoscaling.keda.protocol is http with an external RabbitMQ: set autoscaling.keda.httpSecret to a Secret holding the management URL" -}}
{{- end -}}
{{- end -}}

{{/* Pod template ------------------------------------------------------- */}}

{{/*
Pod template of a Contexten service. Call with
  (dict "root" $ "component" "context-worker" "stage" "context" "binary" "context-worker"
        "c" $values "portName" "health" "port" 9101 "env" (list ...))
and optionally "volumes", "volumeMounts", "lifecycle" and "checksums" (extra
pod annotations). The container gets the component's ConfigMap (envFrom), the
broker and Redis URLs, its own Secret keys, then "env" and extraEnv.
*/}}
{{- define "contexten.podTemplate" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $key := default .component .stage -}}
metadata:
  labels:
    {{- include "contexten.labels" (dict "root" $root "component" .component) | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- /* the binaries read settings once at start: a change rolls the pods */}}
    checksum/config: {{ include "contexten.componentConfig" (dict "root" $root "component" $key) | sha256sum }}
    {{- with .checksums }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- $secretWiring := include "contexten.secretWiring" (dict "root" $root "key" $key) | fromYaml }}
    {{- if $root.Values.secrets.mountAsFiles }}
    {{- /* files follow Secret updates in place: only the values passed as
    variables (and the set of mounted keys, part of env) roll the pods */}}
    {{- $envValues := dict }}
    {{- range $valueKey, $name := include "contexten.secretKeys" $root | fromYaml }}
    {{- if has $name $secretWiring.env }}
    {{- $_ := set $envValues $name (get $root.Values.secrets $valueKey) }}
    {{- end }}
    {{- end }}
    checksum/secret-values: {{ toJson $envValues | sha256sum }}
    {{- else }}
    {{- /* the values only (the file options leave it as it was) */}}
    checksum/secret-values: {{ toJson (omit $root.Values.secrets "mountAsFiles" "mountPath" "existingSecretKeys") | sha256sum }}
    {{- end }}
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
            name: {{ include "contexten.configMapName" (dict "root" $root "component" $key) }}
      env:
        - name: OTEL_SERVICE_NAME
          value: {{ printf "%s%s" $root.Values.config.otel.serviceNamePrefix .binary | quote }}
        - name: AMQP_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.amqpSecretName" $root }}
              key: {{ include "contexten.amqpSecretKey" $root }}
        # caches (evictable) and records (never evicted): README "Redis: records and caches"
        - name: REDIS_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.redisSecretName" $root }}
              key: {{ include "contexten.redisSecretKey" $root }}
        - name: REDIS_RECORDS_URL
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.redisRecordsSecretName" $root }}
              key: {{ include "contexten.redisRecordsSecretKey" $root }}
        {{- range $secretKey := $secretWiring.env }}
        - name: {{ $secretKey }}
          valueFrom:
            secretKeyRef:
              name: {{ include "contexten.secretName" $root }}
              key: {{ $secretKey }}
              # absent key: the variable stays unset and the provider is disabled
              optional: true
        {{- end }}
        {{- range $secretKey := $secretWiring.files }}
        # re-read when the mounted Secret changes (secrets.mountAsFiles)
        - name: {{ printf "%s_FILE" $secretKey }}
          value: {{ printf "%s/%s" (clean $root.Values.secrets.mountPath) $secretKey | quote }}
        {{- end }}
        {{- with $root.Values.tls.caBundle }}
        {{- if or .configMap .secret }}
        # read at start (contexten-tls): restart the pods after a rotation
        - name: CONTEXTEN_CA_FILE
          value: {{ printf "%s/%s" (clean .mountPath) .key | quote }}
        {{- end }}
        {{- end }}
        {{- with $root.Values.tls.clientCertificate }}
        {{- if .secret }}
        - name: CONTEXTEN_CLIENT_CERT_FILE
          value: {{ printf "%s/tls.crt" (clean .mountPath) | quote }}
        - name: CONTEXTEN_CLIENT_KEY_FILE
          value: {{ printf "%s/tls.key" (clean .mountPath) | quote }}
        {{- end }}
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
      # Liveness (/healthz) only asks whether the process answers, so a broker or
      # Redis outage never restarts pods. Readiness (/readyz): a worker is ready
      # with the broker and Redis up; ingest is ready while it serves, broker or
      # not, because answering 503 + Retry-After and recording the refused
      # delivery is its correct answer then (README, "How ingest bounds its
      # resources"); out of the Service, senders would get connection errors.
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
        {{- with $root.Values.tls.caBundle }}
        {{- if or .configMap .secret }}
        - name: tls-ca
          mountPath: {{ clean .mountPath }}
          readOnly: true
        {{- end }}
        {{- end }}
        {{- if $root.Values.tls.clientCertificate.secret }}
        - name: tls-client
          mountPath: {{ clean $root.Values.tls.clientCertificate.mountPath }}
          readOnly: true
        {{- end }}
        {{- if $secretWiring.files }}
        # a directory, not subPath: the kubelet swaps updated keys in place
        - name: secrets
          mountPath: {{ clean $root.Values.secrets.mountPath }}
          readOnly: true
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
    {{- with $root.Values.tls.caBundle }}
    {{- if .configMap }}
    - name: tls-ca
      configMap:
        name: {{ .configMap }}
        defaultMode: 292
        items:
          - key: {{ .key }}
            path: {{ .key }}
    {{- else if .secret }}
    - name: tls-ca
      secret:
        secretName: {{ .secret }}
        defaultMode: 292
        items:
          - key: {{ .key }}
            path: {{ .key }}
    {{- end }}
    {{- end }}
    {{- with $root.Values.tls.clientCertificate }}
    {{- if .secret }}
    - name: tls-client
      secret:
        secretName: {{ .secret }}
        defaultMode: 288
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- end }}
    {{- end }}
    {{- if $secretWiring.files }}
    - name: secrets
      secret:
        secretName: {{ include "contexten.secretName" $root }}
        defaultMode: 288
        # only the keys this binary reads as files
        items:
          {{- range $secretKey := $secretWiring.files }}
          - key: {{ $secretKey }}
            path: {{ $secretKey }}
          {{- end }}
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

{{/*
A writable volume: an emptyDir (sizeLimit) or, with existingClaim, that
PersistentVolumeClaim. Call with (dict "name" "cache" "v" $volumeValues).
*/}}
{{- define "contexten.writableVolume" -}}
name: {{ .name }}
{{- if .v.existingClaim }}
persistentVolumeClaim:
  claimName: {{ .v.existingClaim }}
{{- else }}
emptyDir:
  sizeLimit: {{ .v.sizeLimit }}
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

{{/* An alert's runbook annotations: the section of docs/operations.md, and
     its URL when prometheusRule.runbookBaseUrl is set. */}}
{{- define "contexten.runbook" -}}
runbook: {{ printf "docs/operations.md#%s" .anchor | quote }}
{{- if .base }}
runbook_url: {{ printf "%s#%s" (trimSuffix "#" .base) .anchor | quote }}
{{- end }}
{{- end -}}
