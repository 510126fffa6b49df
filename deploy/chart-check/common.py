"""Shared pieces of the chart check: names, the report, the helm runner."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RELEASE = "contexten"
WORKER_BINARIES = {
    "context": "context-worker",
    "generate": "generator-worker",
    "agent": "agent-worker",
    "dispatch": "dispatcher",
}


# Which binary reads which variable, from the `from_env` functions in the
# Rust code (shared/config, shared/broker/src/service.rs, services/*/src/
# config.rs|settings.rs, services/context-worker/src/lib.rs, shared/llm/src/
# settings.rs, ingest's redeliver.rs and gate.rs, shared/trust's
# OutboundGuard::from_env).
# A variable in a container of another binary is a wiring mistake.
# `<NAME>_FILE`: the secret as a file (shared/config's secret_source and
# secret_value); CONTEXTEN_API_TOKENS_FILE is ingest's own TOML
# tokens file, not the inline CONTEXTEN_API_TOKENS as a file.
_EVERY = """AMQP_URL REDIS_URL REDIS_RECORDS_URL CONTEXTEN_PREFIX LOG_FORMAT RUST_LOG
    OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME RETRY_TIERS_MS PAYLOAD_INLINE_LIMIT_BYTES
    PUBLISH_CONFIRM_TIMEOUT_MS DEAD_QUEUE_MAX_LENGTH QUEUE_TYPE QUORUM_DELIVERY_LIMIT
    AMQP_ADDRESSES REDIS_SENTINELS REDIS_SENTINEL_MASTER REDIS_RECORDS_SENTINEL_MASTER
    REDIS_WAIT_REPLICAS REDIS_WAIT_TIMEOUT_MS
    CONTEXTEN_CA_FILE CONTEXTEN_CLIENT_CERT_FILE CONTEXTEN_CLIENT_KEY_FILE"""
_WORKER = _EVERY + " HEALTH_ADDR WORKER_PREFETCH MAX_ATTEMPTS MAX_DELIVERIES SHUTDOWN_TIMEOUT_SECS"
BINARY_READS: dict[str, set[str]] = {
    "ingest": set((_EVERY + """ INGEST_ADDR GITHUB_WEBHOOK_SECRET LINEAR_WEBHOOK_SECRET
        SLACK_SIGNING_SECRET GITHUB_WEBHOOK_SECRET_FILE LINEAR_WEBHOOK_SECRET_FILE
        SLACK_SIGNING_SECRET_FILE CONTEXTEN_COMMAND_PREFIX CONTEXTEN_BOT_LOGIN LINEAR_BOT_USER_ID
        CONTEXTEN_TRIGGER_LABEL CONTEXTEN_ALLOWED_ASSOCIATIONS CONTEXTEN_ROUTING_RULES
        CONTEXTEN_API_TOKENS_FILE CONTEXTEN_API_TOKENS CONTEXTEN_ALLOW_LOCAL_REPOS CONTEXTEN_OUTBOUND_ALLOW
        CONTEXTEN_POLICY_FILE CONTEXTEN_GIT_ALLOW_SSH CONTEXTEN_GIT_SERVERS
        SLACK_TEAM_IDS SLACK_APP_ID SLACK_USER_IDS SLACK_CHANNEL_IDS LINEAR_ORGANIZATION_ID LINEAR_TEAM_IDS
        GITHUB_ALLOWED_REPOSITORIES INGEST_REQUESTER_LIMIT INGEST_REQUESTER_WINDOW_SECS
        INGEST_MAX_BODY_BYTES INGEST_DEDUP_TTL_SECS INGEST_CONVERSATION_TTL_SECS
        SLACK_TIMESTAMP_TOLERANCE_SECS LINEAR_TIMESTAMP_TOLERANCE_SECS INGEST_RETRY_AFTER_SECS INGEST_WORKER_THREADS
        INGEST_REQUEST_TIMEOUT_SECS INGEST_HEADER_TIMEOUT_SECS INGEST_MAX_CONCURRENT_REQUESTS INGEST_MAX_CONNECTIONS INGEST_BODY_MEMORY_BYTES
        INGEST_FAILED_DELIVERIES_FILE GITHUB_API_URL GITHUB_TOKEN GITHUB_TOKEN_FILE GITHUB_APP_ID
        GITHUB_APP_PRIVATE_KEY GITHUB_APP_PRIVATE_KEY_FILE
        GITLAB_WEBHOOK_SECRET GITLAB_WEBHOOK_SECRET_FILE""").split()),
    "context-worker": set((_WORKER + """ CONTEXT_CACHE_DIR CONTEXT_TOP_K
        CONTEXT_PROMPT_BUDGET_TOKENS CONTEXT_CACHE_TTL_SECS CONTEXT_MAP_TTL_SECS CONTEXT_CACHE_MAX_BYTES CACHE_ENCRYPTION_KEY
        CACHE_ENCRYPTION_KEY_FILE LLM_MODEL CONTEXTEN_ALLOW_LOCAL_REPOS CONTEXTEN_OUTBOUND_ALLOW CONTEXTEN_GIT_ALLOW_SSH GITHUB_TOKEN
        GITHUB_TOKEN_FILE CONTEXT_GIT_TIMEOUT_SECS CONTEXT_MAX_FILES CONTEXT_MAX_TOTAL_BYTES GITHUB_API_URL
        CONTEXT_MEMORY_BUDGET_BYTES CONTEXT_HISTORY_DEPTH""").split()),
    "generator-worker": set((_WORKER + """ LLM_PROVIDER LLM_BASE_URL LLM_API_KEY LLM_API_KEY_FILE LLM_MODEL
        LLM_TIMEOUT_SECS LLM_MAX_TOKENS LLM_TEMPERATURE LLM_MAX_CONCURRENCY LLM_REQUESTS_PER_MIN
        LLM_TOKENS_PER_MIN LLM_MAX_RETRIES LLM_RETRY_BASE_MS LLM_MAX_INLINE_WAIT_SECS
        LLM_BREAKER_FAILURES LLM_BREAKER_OPEN_SECS GENERATOR_CACHE_DIR GENERATOR_CACHE_TTL_SECS
        GENERATOR_CACHE_MEMORY_ENTRIES CACHE_ENCRYPTION_KEY CACHE_ENCRYPTION_KEY_FILE CONTEXTEN_ALLOW_LOCAL_REPOS CONTEXTEN_OUTBOUND_ALLOW
        CONTEXTEN_GIT_ALLOW_SSH
        GENERATOR_REPO_CACHE_DIR GENERATOR_GIT_TIMEOUT_SECS GITHUB_TOKEN GITHUB_TOKEN_FILE GENERATOR_CACHE_MAX_BYTES
        GENERATOR_CONTEXT_ONLY_SOURCE""").split()),
    "agent-worker": set((_WORKER + """ CODEGEN_API_URL CODEGEN_ORG_ID CODEGEN_API_TOKEN CODEGEN_API_TOKEN_FILE
        CODEGEN_TIMEOUT_SECS CODEGEN_CREATE_LIMIT CODEGEN_CREATE_WINDOW_MS CODEGEN_REQUEST_LIMIT
        CODEGEN_REQUEST_WINDOW_MS CODEGEN_BREAKER_FAILURES CODEGEN_BREAKER_OPEN_MS
        CODEGEN_BREAKER_PROBE_TIMEOUT_MS AGENT_POLL_INITIAL_MS AGENT_POLL_MAX_MS
        AGENT_MAX_RUN_SECS AGENT_LIMIT_MAX_HOLD_MS AGENT_MAX_RUNS_PER_REQUESTER""").split()),
    "dispatcher": set((_WORKER + """ GITHUB_TOKEN GITHUB_APP_ID GITHUB_APP_PRIVATE_KEY
        GITHUB_APP_INSTALLATION_ID LINEAR_API_KEY SLACK_BOT_TOKEN CALLBACK_SIGNING_SECRET
        GITHUB_TOKEN_FILE GITHUB_APP_PRIVATE_KEY_FILE LINEAR_API_KEY_FILE SLACK_BOT_TOKEN_FILE
        CALLBACK_SIGNING_SECRET_FILE
        CONTEXTEN_OUTBOUND_ALLOW CONTEXTEN_ALLOW_LOCAL_REPOS
        GITHUB_API_URL LINEAR_API_URL SLACK_API_URL DISPATCH_HTTP_TIMEOUT_SECS
        GITHUB_WRITES_PER_MINUTE GITHUB_WRITES_PER_HOUR SLACK_CHANNEL_MESSAGES_PER_SECOND
        SLACK_COMMAND_REPLY LINEAR_REQUESTS_PER_HOUR DISPATCH_LIMIT_WAIT_MS
        GITLAB_TOKEN GITLAB_TOKEN_FILE GITLAB_API_URL GITLAB_REQUESTS_PER_MINUTE""").split()),
}
# Runtime settings ingest parses with the broker settings but never uses; the
# chart and compose give them to the workers only.
INGEST_UNUSED = {"WORKER_PREFETCH", "MAX_ATTEMPTS", "MAX_DELIVERIES", "SHUTDOWN_TIMEOUT_SECS"}
# Paths a binary writes: they must lie in a writable volume (the root
# filesystem is read-only). Directories, except the failed-deliveries file.
WRITABLE_PATHS = {"CONTEXT_CACHE_DIR", "GENERATOR_CACHE_DIR", "GENERATOR_REPO_CACHE_DIR",
                  "INGEST_FAILED_DELIVERIES_FILE"}
# The keys of the chart's credentials Secret (secrets.* / secrets.existingSecret),
# named after their variables.
SECRET_KEYS = {"GITHUB_WEBHOOK_SECRET", "LINEAR_WEBHOOK_SECRET", "SLACK_SIGNING_SECRET",
               "CONTEXTEN_API_TOKENS", "GITHUB_TOKEN", "GITHUB_APP_PRIVATE_KEY", "LINEAR_API_KEY",
               "SLACK_BOT_TOKEN", "CALLBACK_SIGNING_SECRET", "CODEGEN_API_TOKEN", "LLM_API_KEY",
               "CACHE_ENCRYPTION_KEY", "GITLAB_WEBHOOK_SECRET", "GITLAB_TOKEN"}
# binary -> the secrets it also reads as `<NAME>_FILE` (from BINARY_READS).
SECRET_FILES: dict[str, set[str]] = {
    binary: {k for k in SECRET_KEYS - {"CONTEXTEN_API_TOKENS"} if f"{k}_FILE" in reads}
    for binary, reads in BINARY_READS.items()
}
# Files a binary reads that the chart mounts (from a Secret or a ConfigMap);
# the `<NAME>_FILE` of the secrets with secrets.mountAsFiles.
MOUNTED_FILES = {"CONTEXTEN_API_TOKENS_FILE", "CONTEXTEN_ROUTING_RULES", "CONTEXTEN_POLICY_FILE",
                 "CONTEXTEN_CA_FILE", "CONTEXTEN_CLIENT_CERT_FILE", "CONTEXTEN_CLIENT_KEY_FILE"} | {
    f"{k}_FILE" for k in set().union(*SECRET_FILES.values())}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f"\n        {detail}" if detail else ""))
        return ok


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def nested(path: tuple, value) -> dict:
    out: object = value
    for key in reversed(path):
        out = {key: out}
    return out  # type: ignore[return-value]


class Helm:
    def __init__(self, helm: str, chart: Path, workdir: Path) -> None:
        self.helm = helm
        self.chart = chart
        self.workdir = workdir
        self.count = 0

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([self.helm, *args], capture_output=True, text=True)

    def values_file(self, values: dict | None) -> list[str]:
        if not values:
            return []
        self.count += 1
        path = self.workdir / f"values-{self.count}.yaml"
        path.write_text(yaml.safe_dump(values))
        return ["-f", str(path)]

    def template(self, files: list[Path] = (), values: dict | None = None,
                 kube_version: str | None = None, api_versions: list[str] = ()) -> tuple[list[dict] | None, str]:
        args = ["template", RELEASE, str(self.chart), "--namespace", "contexten"]
        for f in files:
            args += ["-f", str(f)]
        args += self.values_file(values)
        if kube_version:
            args += ["--kube-version", kube_version]
        for api in api_versions:
            args += ["--api-versions", api]
        res = self.run(args)
        if res.returncode != 0:
            return None, res.stderr.strip()
        return [d for d in yaml.safe_load_all(res.stdout) if d], ""


def get_path(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree
