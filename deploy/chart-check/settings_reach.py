"""Check that every setting of values.yaml reaches a container.

Each setting is changed alone; the effective environment of some container
(env and envFrom with Secret/ConfigMap references resolved, mounted Secret
files) must change and, for strings, show the new value. With every setting
set, each variable of the operator interface must reach a container.
"""
from __future__ import annotations

import base64
import copy
import json

from common import Helm, Report, deep_merge, get_path, nested

# The operator interface (DESIGN §11 + the runtime settings): every name must
# be wireable from values.yaml.
INTERFACE_VARS = """
AMQP_URL REDIS_URL CONTEXTEN_PREFIX INGEST_ADDR HEALTH_ADDR
GITHUB_WEBHOOK_SECRET LINEAR_WEBHOOK_SECRET SLACK_SIGNING_SECRET
GITHUB_TOKEN GITHUB_APP_ID GITHUB_APP_PRIVATE_KEY LINEAR_API_KEY SLACK_BOT_TOKEN
GITHUB_API_URL LINEAR_API_URL SLACK_API_URL CODEGEN_API_URL LLM_BASE_URL
CODEGEN_ORG_ID CODEGEN_API_TOKEN LLM_API_KEY LLM_MODEL CONTEXTEN_API_TOKENS_FILE
CACHE_ENCRYPTION_KEY CONTEXTEN_ALLOW_LOCAL_REPOS CONTEXTEN_COMMAND_PREFIX CONTEXTEN_BOT_LOGIN
WORKER_PREFETCH MAX_ATTEMPTS SHUTDOWN_TIMEOUT_SECS LOG_FORMAT RUST_LOG
OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME
""".split()

# Renders of this check pin the generated passwords, so that only the setting
# under test changes the output.
DETERMINISTIC = {
    "rabbitmq": {"bundled": {"password": "fixed-rabbit"}},
    "redis": {"bundled": {"password": "fixed-redis"}},
}


def effective_env(docs: list[dict]) -> dict[str, dict[str, str]]:
    """container id -> {VAR: value}, with Secret/ConfigMap references resolved
    against the rendered objects (an unrendered one stays a named reference)
    and mounted Secret files added as `file:<path>` entries."""
    secrets: dict[str, dict[str, str]] = {}
    configmaps: dict[str, dict[str, str]] = {}
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
            data.update(d.get("stringData") or {})
            secrets[name] = data
        elif d["kind"] == "ConfigMap":
            configmaps[name] = {k: str(v) for k, v in (d.get("data") or {}).items()}

    def lookup(store: dict, kind: str, name: str, key: str) -> str:
        if name in store:
            return store[name].get(key, f"<missing {kind} key {name}/{key}>")
        return f"<{kind} {name}/{key}>"

    out: dict[str, dict[str, str]] = {}
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            env: dict[str, str] = {}
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    env.update(configmaps.get(src["configMapRef"]["name"], {"<configmap>": src["configMapRef"]["name"]}))
                if "secretRef" in src:
                    env.update(secrets.get(src["secretRef"]["name"], {"<secret>": src["secretRef"]["name"]}))
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                elif "secretKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["secretKeyRef"]
                    env[e["name"]] = lookup(secrets, "secret", ref["name"], ref["key"])
                elif "configMapKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["configMapKeyRef"]
                    env[e["name"]] = lookup(configmaps, "configmap", ref["name"], ref["key"])
                else:
                    env[e["name"]] = json.dumps(e.get("valueFrom"), sort_keys=True)
            for m in c.get("volumeMounts", []):
                vol = volumes.get(m["name"], {})
                if "secret" in vol:
                    name = vol["secret"]["secretName"]
                    for key, value in secrets.get(name, {"*": f"<secret {name}>"}).items():
                        env[f"file:{m['mountPath']}/{key}"] = value
            out[f"{d['kind']}/{d['metadata']['name']}/{c['name']}"] = env
    return out


def leaves(tree: dict, prefix: tuple = ()) -> list[tuple[tuple, object]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += leaves(value, prefix + (key,))
        elif not isinstance(value, (dict, list)):
            out.append((prefix + (key,), value))
    return out


def schema_at(schema: dict, path: tuple) -> dict:
    """The values.schema.json node of a values path ({} when unknown)."""
    node = schema
    for key in path:
        while "$ref" in node:
            node = get_path(schema, tuple(node["$ref"].lstrip("#/").split("/")))
        node = node.get("properties", {}).get(key, {})
    return node


def sentinel_for(path: tuple, default, n: int, schema: dict):
    """A value of the right type and shape (so the schema accepts it) that is
    easy to find in the rendered environment."""
    key = path[-1]
    enum = schema_at(schema, path).get("enum")
    if enum:
        return next(v for v in enum if v != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        if key in ("healthPort", "port"):
            return 20000 + n
        return default + 1 + n % 7
    tag = f"sentinel{n}x"
    if path[:2] == ("rabbitmq", "external") and key == "url":
        return f"amqp://u:{tag}@broker.invalid:5672/%2f"
    if path[:2] == ("redis", "external") and key == "url":
        return f"redis://:{tag}@redis.invalid:6379"
    if key.lower().endswith("url") or key == "endpoint":
        return f"http://{tag}.invalid"
    if key == "prefix":
        return tag
    if key == "mountPath":
        return f"/{tag}"
    if key == "existingSecretKey":
        return tag.upper()
    if key in ("codegenOrgId", "githubAppId"):
        return str(900000 + n)
    if key == "vhost":
        return tag
    return tag


def settings_plan(values: dict) -> list[tuple[tuple, dict]]:
    """(setting path, base overlay) pairs: every setting a container should
    see, each with the context in which it is in force."""
    plan: list[tuple[tuple, dict]] = []
    for path, _ in leaves(values["config"], ("config",)):
        plan.append((path, {}))
    for path, _ in leaves(values["secrets"], ("secrets",)):
        plan.append((path, {}))
    plan.append((("apiTokens", "content"), {}))
    plan.append((("apiTokens", "mountPath"), {"apiTokens": {"content": "t"}}))
    plan.append((("apiTokens", "existingSecret"), {}))
    plan.append((("apiTokens", "existingSecretKey"), {"apiTokens": {"existingSecret": "tok"}}))
    plan.append((("ingest", "port"), {}))
    for stage in values["workers"]:
        plan.append((("workers", stage, "prefetch"), {}))
        plan.append((("workers", stage, "healthPort"), {}))
    plan.append((("rabbitmq", "vhost"), {}))
    plan.append((("rabbitmq", "bundled", "username"), {}))
    plan.append((("rabbitmq", "bundled", "password"), {}))
    plan.append((("redis", "bundled", "password"), {}))
    for svc, scheme in (("rabbitmq", "amqp://a:b@h.invalid/%2f"), ("redis", "redis://h.invalid:6379")):
        ext = {svc: {"mode": "external", "external": {"url": scheme}}}
        plan.append(((svc, "external", "url"), ext))
        plan.append(((svc, "external", "existingSecret"), ext))
        plan.append(((svc, "external", "existingSecretKey"),
                     {svc: {"mode": "external", "external": {"existingSecret": "conn"}}}))
    return plan


def check_settings_reach_containers(helm: Helm, values: dict, schema: dict, rep: Report) -> None:
    print("settings -> containers (each setting changed alone must change some container's environment)")
    baselines: dict[str, dict] = {}
    unreached = []
    for n, (path, base) in enumerate(settings_plan(values)):
        base = deep_merge(DETERMINISTIC, base)
        key = json.dumps(base, sort_keys=True)
        if key not in baselines:
            docs, err = helm.template(values=base)
            if docs is None:
                rep.check(False, f"render baseline {key}", err)
                return
            baselines[key] = effective_env(docs)
        before = baselines[key]
        default = get_path(deep_merge(values, base), path)
        new = sentinel_for(path, default, n, schema)
        docs, err = helm.template(values=deep_merge(base, nested(path, new)))
        name = ".".join(path)
        if docs is None:
            rep.check(False, f"{name}: renders when set to {new!r}", err)
            continue
        after = effective_env(docs)
        changed = {(c, var): val for c, env in after.items() for var, val in env.items()
                   if before.get(c, {}).get(var) != val}
        ok = bool(changed)
        if ok and isinstance(new, str):
            ok = any(new in val for val in changed.values())
        elif ok and isinstance(new, int) and not isinstance(new, bool):
            ok = any(str(new) in val for val in changed.values())
        if not ok:
            unreached.append(name)
    total = len(settings_plan(values))
    rep.check(not unreached, f"{total - len(unreached)}/{total} settings of values.yaml reach a container",
              "reach no container: " + ", ".join(unreached))

    # Everything set at once: the whole operator interface is present.
    full: dict = copy.deepcopy(DETERMINISTIC)
    for n, (path, base) in enumerate(settings_plan(values)):
        if path[0] in ("config", "secrets") and path[-1] != "existingSecret":
            full = deep_merge(full, nested(path, sentinel_for(path, get_path(values, path), n, schema)))
    full = deep_merge(full, {"apiTokens": {"content": "t"}})
    docs, err = helm.template(values=full)
    if not rep.check(docs is not None, "render with every setting set", err):
        return
    present = set()
    for env in effective_env(docs).values():
        present |= set(env)
    missing = [v for v in INTERFACE_VARS if v not in present]
    rep.check(not missing, f"all {len(INTERFACE_VARS)} operator-interface variables reach a container",
              "missing: " + ", ".join(missing))
