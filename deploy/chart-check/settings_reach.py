"""Check that every setting of values.yaml reaches a container, and only the
containers of the binaries that read it.

Each setting is changed alone; the effective environment of some container
(env and envFrom with Secret/ConfigMap references resolved, mounted Secret and
ConfigMap files, other volumes) must change and, for strings, show the new
value. With every setting set, each variable any binary reads (common.
BINARY_READS) must reach a container, no container may get a variable its
binary does not read, the paths the binaries write must lie in writable
volumes and the files they read must be mounted.
"""
from __future__ import annotations

import base64
import copy
import json

import posixpath

from common import (BINARY_READS, MOUNTED_FILES, SECRET_KEYS, WRITABLE_PATHS, Helm,
                    Report, deep_merge, get_path, nested)

# The operator interface: docs/design.md §11 and every other variable a binary reads.
# Each must be wireable from values.yaml.
INTERFACE_VARS = sorted(set().union(*BINARY_READS.values()))

# Renders of this check pin the generated passwords, so that only the setting
# under test changes the output.
DETERMINISTIC = {
    "rabbitmq": {"bundled": {"password": "fixed-rabbit"}},
    "redis": {"records": {"bundled": {"password": "fixed-records"}},
              "cache": {"bundled": {"password": "fixed-redis"}}},
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
                kind = "secret" if "secret" in vol else "configMap" if "configMap" in vol else None
                if kind is None:
                    source = {k: v for k, v in vol.items() if k != "name"}
                    env[f"mount:{m['mountPath']}"] = json.dumps(source, sort_keys=True)
                    continue
                store = secrets if kind == "secret" else configmaps
                name = vol[kind]["secretName" if kind == "secret" else "name"]
                if vol[kind].get("items"):  # only the listed keys, at their paths
                    for item in vol[kind]["items"]:
                        env[f"file:{m['mountPath']}/{item['path']}"] = lookup(store, kind.lower(), name, item["key"])
                else:
                    for key, value in store.get(name, {"*": f"<{kind.lower()} {name}>"}).items():
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
    node = schema_at(schema, path)
    enum = node.get("enum")
    if enum:
        return next(v for v in enum if v != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        if key in ("healthPort", "port"):
            return 20000 + n
        step = 1 + n % 7 if isinstance(default, int) else 0.5
        lo, hi = node.get("minimum", float("-inf")), node.get("maximum", float("inf"))
        new = default + step if default + step <= hi else default - step
        assert lo <= new <= hi, f"no sentinel for {path} in {lo}..{hi}"
        return new
    if key == "existingSecretKeys":
        return [*default, "LLM_API_KEY"]
    tag = f"sentinel{n}x"
    if key == "retryTiersMs":
        return f"1000,{20000 + n}"
    if key == "sizeLimit":
        return f"{100 + n}Mi"
    if path[:2] == ("rabbitmq", "external") and key == "url":
        return f"amqp://u:{tag}@broker.invalid:5672/%2f"
    if path[0] == "redis" and path[-2:] == ("external", "url"):
        return f"redis://:{tag}@redis.invalid:6379"
    if key.lower().endswith("url") or key == "endpoint":
        return f"http://{tag}.invalid"
    if key == "prefix":
        return tag
    if key == "githubAllowedRepositories":
        return f"{tag}/*"
    if key == "gitServers":
        return f"https://{tag}.invalid"
    if key == "mountPath":
        return f"/{tag}"
    if key == "existingSecretKey":
        return tag.upper()
    if key in ("codegenOrgId", "githubAppId", "githubAppInstallationId"):
        return str(900000 + n)
    if key in ("amqpAddresses", "redisSentinels"):
        return f"{tag}-0.invalid:5672,{tag}-1.invalid:5672"
    if key == "redisWaitReplicas":
        return str(n % 10)
    if key == "redisWaitTimeoutMs":
        return str(1000 + n)
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
        if path[-1] == "mountAsFiles":  # shows once a secret is set
            plan.append((path, {"secrets": {"githubWebhookSecret": "w"}}))
        elif path[-1] == "mountPath":
            plan.append((path, {"secrets": {"mountAsFiles": True, "githubWebhookSecret": "w"}}))
        else:
            plan.append((path, {}))
    plan.append((("secrets", "existingSecretKeys"),
                 {"secrets": {"mountAsFiles": True, "existingSecret": "creds",
                              "existingSecretKeys": ["GITHUB_WEBHOOK_SECRET"]}}))
    plan.append((("apiTokens", "content"), {}))
    plan.append((("apiTokens", "mountPath"), {"apiTokens": {"content": "t"}}))
    plan.append((("apiTokens", "existingSecret"), {}))
    plan.append((("apiTokens", "existingSecretKey"), {"apiTokens": {"existingSecret": "tok"}}))
    plan.append((("routingRules", "content"), {}))
    plan.append((("routingRules", "mountPath"), {"routingRules": {"content": "r"}}))
    plan.append((("routingRules", "existingConfigMap"), {}))
    plan.append((("routingRules", "existingConfigMapKey"), {"routingRules": {"existingConfigMap": "rules"}}))
    plan.append((("policy", "content"), {}))
    plan.append((("policy", "mountPath"), {"policy": {"content": "p"}}))
    plan.append((("policy", "existingConfigMap"), {}))
    plan.append((("policy", "existingConfigMapKey"), {"policy": {"existingConfigMap": "access"}}))
    plan.append((("tls", "caBundle", "configMap"), {}))
    plan.append((("tls", "caBundle", "secret"), {}))
    plan.append((("tls", "caBundle", "key"), {"tls": {"caBundle": {"configMap": "cas"}}}))
    plan.append((("tls", "caBundle", "mountPath"), {"tls": {"caBundle": {"secret": "cas"}}}))
    plan.append((("tls", "clientCertificate", "secret"), {}))
    plan.append((("tls", "clientCertificate", "mountPath"), {"tls": {"clientCertificate": {"secret": "client"}}}))
    for path, _ in leaves(values["ingest"]["dataVolume"], ("ingest", "dataVolume")):
        plan.append((path, {}))
    for stage, worker in values["workers"].items():
        for path, _ in leaves(worker.get("cacheVolume", {}), ("workers", stage, "cacheVolume")):
            plan.append((path, {}))
    plan.append((("ingest", "port"), {}))
    for stage in values["workers"]:
        plan.append((("workers", stage, "prefetch"), {}))
        plan.append((("workers", stage, "healthPort"), {}))
    plan.append((("rabbitmq", "vhost"), {}))
    plan.append((("rabbitmq", "bundled", "username"), {}))
    plan.append((("rabbitmq", "bundled", "password"), {}))
    plan.append((("redis", "records", "bundled", "password"), {}))
    plan.append((("redis", "cache", "bundled", "password"), {}))
    for svc, scheme in (("rabbitmq", "amqp://a:b@h.invalid/%2f"), ("redis.records", "redis://h.invalid:6379"),
                        ("redis.cache", "redis://h.invalid:6379")):
        where = tuple(svc.split("."))
        ext = nested(where, {"mode": "external", "external": {"url": scheme}})
        plan.append(((*where, "external", "url"), ext))
        plan.append(((*where, "external", "existingSecret"), ext))
        plan.append(((*where, "external", "existingSecretKey"),
                     nested(where, {"mode": "external", "external": {"existingSecret": "conn"}})))
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
    # Secrets as variables, then (secrets.mountAsFiles) as `<NAME>_FILE`.
    full = every_setting_set(values, schema)
    docs, err = helm.template(values=full)
    if not rep.check(docs is not None, "render with every setting set", err):
        return
    file_docs, err = helm.template(values=deep_merge(full, {"secrets": {"mountAsFiles": True}}))
    if not rep.check(file_docs is not None, "render with every setting set, secrets as files", err):
        return
    envs = effective_env(docs)
    file_envs = effective_env(file_docs)
    present = set()
    for env in [*envs.values(), *file_envs.values()]:
        present |= set(env)
    missing = [v for v in INTERFACE_VARS if v not in present]
    rep.check(not missing, f"all {len(INTERFACE_VARS)} operator-interface variables reach a container "
              "(secrets as variables and as files)", "missing: " + ", ".join(missing))

    # ... and each only the binaries that read it (default and full renders).
    stray = []
    defaults, _ = helm.template(values=DETERMINISTIC)
    for label, rendered in (("default", effective_env(defaults or [])), ("everything set", envs),
                            ("everything set, secrets as files", file_envs)):
        for cid, env in rendered.items():
            binary = cid.rsplit("/", 1)[-1]
            if binary not in BINARY_READS:
                continue  # RabbitMQ, Redis
            extra = sorted(v for v in env if ":" not in v and v not in BINARY_READS[binary])
            if extra:
                stray.append(f"[{label}] {binary}: {', '.join(extra)}")
    rep.check(bool(defaults) and not stray,
              "every variable reaches only the binaries that read it", "; ".join(stray))
    # the default render mounts no tokens file, no routing rules, no policy and no secrets
    secret_files = {f"{k}_FILE" for k in SECRET_KEYS}
    check_paths("default", defaults or [], rep, WRITABLE_PATHS)
    check_paths("everything set", docs, rep, WRITABLE_PATHS | (MOUNTED_FILES - secret_files))
    check_paths("everything set, secrets as files", file_docs, rep, WRITABLE_PATHS | MOUNTED_FILES)


def every_setting_set(values: dict, schema: dict) -> dict:
    """Values with every config and secret setting set (secrets as variables),
    an API tokens file, routing rules and a policy."""
    full: dict = copy.deepcopy(DETERMINISTIC)
    for n, (path, base) in enumerate(settings_plan(values)):
        if path[0] in ("config", "secrets") and path[-1] not in (
                "existingSecret", "existingSecretKeys", "mountAsFiles", "mountPath"):
            full = deep_merge(full, nested(path, sentinel_for(path, get_path(values, path), n, schema)))
    return deep_merge(full, {"apiTokens": {"content": "t"}, "routingRules": {"content": "r"},
                             "policy": {"content": "p"},
                             "tls": {"caBundle": {"configMap": "cas"},
                                     "clientCertificate": {"secret": "client"}}})


def check_paths(label: str, docs: list[dict], rep: Report, expected: set[str]) -> None:
    """Written paths lie in writable volumes; read files are mounted; every
    variable of `expected` is set in some container."""
    problems, seen = [], set()
    envs = effective_env(docs)
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            env = envs[f"Deployment/{d['metadata']['name']}/{c['name']}"]
            writable = [m["mountPath"] for m in c.get("volumeMounts", [])
                        if not m.get("readOnly") and ("emptyDir" in volumes[m["name"]]
                                                      or "persistentVolumeClaim" in volumes[m["name"]])]
            for var in WRITABLE_PATHS & set(env):
                seen.add(var)
                if var == "GENERATOR_CACHE_DIR" and env[var] == "off":
                    continue  # no disk layer
                path = posixpath.normpath(env[var])
                if not any(path.startswith(m.rstrip("/") + "/") for m in writable):
                    problems.append(f"{c['name']}: {var}={env[var]} is not in a writable volume")
            for var in MOUNTED_FILES & set(env):
                seen.add(var)
                if f"file:{env[var]}" not in env:
                    problems.append(f"{c['name']}: {var}={env[var]} is not a mounted file")
                elif env[f"file:{env[var]}"].startswith("<missing"):
                    problems.append(f"{c['name']}: {var}={env[var]}: {env[f'file:{env[var]}']}")
    unseen = sorted(expected - seen)
    rep.check(not problems and not unseen,
              f"[{label}] written paths in writable volumes, read files mounted ({', '.join(sorted(seen))})",
              "; ".join(problems + [f"{v} not set" for v in unseen]))
