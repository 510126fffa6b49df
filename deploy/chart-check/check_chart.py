#!/usr/bin/env python3
"""Offline checks of the Contexten Helm chart (called by deploy/chart-check.sh).

1. `helm lint --strict` and `helm template` with the default values and with
   values-production.yaml (and the default values on a cluster that serves KEDA).
2. Every rendered object is validated against the Kubernetes OpenAPI schemas
   that kubernetes-validate ships (strict: unknown fields fail), for the oldest
   and the newest Kubernetes version we target. CRD objects (KEDA, Prometheus
   Operator) are validated against the hand-written schemas in crd-schemas/.
3. Fleet rules: every worker type has an autoscaler (KEDA ScaledObject or HPA)
   in every values file; graceful termination outlasts SHUTDOWN_TIMEOUT_SECS;
   probes hit /healthz and /readyz; every Deployment has a PDB.
4. Every setting in values.yaml reaches a container: each leaf under config,
   secrets, apiTokens, the broker/Redis connection values and the per-worker
   prefetch/ports is changed alone, and the effective environment (env,
   envFrom, secretKeyRef/configMapKeyRef resolved, mounted Secret files) of
   some container must change, showing the new value where it is a string.
   With everything set, every variable of the operator interface (DESIGN §11)
   must appear in some container.
5. Negative tests: each bad-values/*.yaml must be rejected by the chart, with
   every `# expect:` message of the file in helm's error output.
6. The Grafana dashboard: every PromQL expression parses (promql-parser) and
   every fleet metric is charted; the compose file wires the five services;
   the Dockerfile parses (BuildKit's parser) and keeps its promises (cache
   mounts, a non-root runtime with CA certificates and git, every binary).

Prints one line per check and a summary; exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dockerfile
import jsonschema
import kubernetes_validate.utils as kv
import promql_parser
import yaml

HERE = Path(__file__).resolve().parent
RELEASE = "contexten"
WORKER_BINARIES = {
    "context": "context-worker",
    "generate": "generator-worker",
    "agent": "agent-worker",
    "dispatch": "dispatcher",
}
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
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
# Renders of the env-reach check pin the generated passwords, so that only the
# setting under test changes the output.
DETERMINISTIC = {
    "rabbitmq": {"bundled": {"password": "fixed-rabbit"}},
    "redis": {"bundled": {"password": "fixed-redis"}},
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.notes: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f"\n        {detail}" if detail else ""))
        return ok

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  skip  {text}")


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


# ---------------------------------------------------------------- env model

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


def get_path(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


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


# ---------------------------------------------------------------- rules

def check_fleet_rules(label: str, docs: list[dict], rep: Report) -> None:
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {}
    for d in docs:
        if d["kind"] == "ScaledObject":
            scaled[d["spec"]["scaleTargetRef"]["name"]] = "ScaledObject"
        elif d["kind"] == "HorizontalPodAutoscaler":
            scaled[d["spec"]["scaleTargetRef"]["name"]] = "HPA"
    missing = []
    kinds = set()
    for binary in ["ingest", *WORKER_BINARIES.values()]:
        name = f"{RELEASE}-{binary}"
        if name not in deployments:
            missing.append(f"{binary} (no Deployment)")
        elif name not in scaled:
            missing.append(binary)
        else:
            kinds.add(f"{binary}={scaled[name]}")
    rep.check(not missing, f"[{label}] every worker type has an autoscaler ({', '.join(sorted(kinds))})",
              "no autoscaler: " + ", ".join(missing))

    config = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{RELEASE}-config"), None)
    timeout = int((config or {}).get("data", {}).get("SHUTDOWN_TIMEOUT_SECS", "30"))
    pdb_selectors = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    problems = []
    for name, d in deployments.items():
        pod = d["spec"]["template"]
        labels = pod["metadata"]["labels"]
        if labels.get("app.kubernetes.io/part-of") != "contexten" or labels.get("app.kubernetes.io/component") == "redis":
            continue
        spec = pod["spec"]
        if int(spec.get("terminationGracePeriodSeconds", 30)) <= timeout:
            problems.append(f"{name}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds')} <= SHUTDOWN_TIMEOUT_SECS {timeout}")
        c = spec["containers"][0]
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{name}: liveness probe is not /healthz")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{name}: readiness probe is not /readyz")
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: not runAsNonRoot")
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            problems.append(f"{name}: no PodDisruptionBudget")
    rep.check(not problems, f"[{label}] grace > shutdown timeout ({timeout}s), probes, non-root, PDBs",
              "; ".join(problems))


# ---------------------------------------------------------------- schemas

def validate_docs(label: str, docs: list[dict], k8s_version: str, rep: Report) -> None:
    errors = []
    counted: dict[str, int] = {}
    for d in docs:
        what = f"{d['kind']}/{d['metadata']['name']}"
        counted[d["kind"]] = counted.get(d["kind"], 0) + 1
        crd = CRD_SCHEMAS.get((d["apiVersion"], d["kind"]))
        try:
            if crd:
                schema = json.loads((HERE / "crd-schemas" / crd).read_text())
                jsonschema.Draft7Validator(schema).validate(d)
            else:
                kv.validate(d, k8s_version, strict=True)
        except jsonschema.ValidationError as e:
            loc = ".".join(str(p) for p in e.absolute_path)
            errors.append(f"{what}: {loc}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{what}: {e.message}")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counted.items()))
    rep.check(not errors, f"[{label}] {len(docs)} objects valid against Kubernetes {k8s_version} ({kinds})",
              "\n        ".join(errors[:20]))


# ---------------------------------------------------------------- NOTES.txt

def check_notes(helm: Helm, label: str, files: list[Path], apis: list[str], rep: Report) -> None:
    """helm template skips NOTES.txt, so render it from a copy of the chart in
    which it is a named template included by an ordinary manifest."""
    copy_dir = helm.workdir / "notes-chart"
    if not copy_dir.exists():
        shutil.copytree(helm.chart, copy_dir)
        notes = (copy_dir / "templates" / "NOTES.txt")
        (copy_dir / "templates" / "_chartcheck_notes.tpl").write_text(
            '{{- define "chartcheck.notes" -}}\n' + notes.read_text() + '{{- end -}}\n')
        notes.unlink()
        (copy_dir / "templates" / "zz-chartcheck-notes.yaml").write_text(
            'notes: {{ include "chartcheck.notes" . | toJson }}\n')
    args = ["template", RELEASE, str(copy_dir), "--namespace", "contexten",
            "--show-only", "templates/zz-chartcheck-notes.yaml"]
    for f in files:
        args += ["-f", str(f)]
    for api in apis:
        args += ["--api-versions", api]
    res = helm.run(args)
    text = yaml.safe_load(res.stdout)["notes"] if res.returncode == 0 else ""
    rep.check(res.returncode == 0 and "<no value>" not in text and "Contexten" in text,
              f"[{label}] NOTES.txt renders ({len(text.splitlines())} lines)", res.stderr.strip())


# ---------------------------------------------------------------- negative

def check_bad_values(helm: Helm, rep: Report) -> None:
    print("negative tests (bad values must be rejected)")
    for path in sorted((HERE / "bad-values").glob("*.yaml")):
        expects = [line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                   if line.startswith("# expect:")]
        docs, err = helm.template(files=[path])
        if docs is not None:
            rep.check(False, f"{path.name} is rejected", "helm template accepted it")
            continue
        missing = [e for e in expects if e not in err]
        rep.check(bool(expects) and not missing,
                  f"{path.name} is rejected ({len(expects)} expected message{'s' if len(expects) != 1 else ''})",
                  "not in helm's output: " + " | ".join(missing) + "\n        helm said: " + err.replace("\n", " / "))


# ---------------------------------------------------------------- dashboard, compose

FLEET_METRICS = """
contexten_stage_received_total contexten_stage_done_total contexten_stage_retried_total
contexten_stage_dead_lettered_total contexten_handler_duration_seconds contexten_breaker_state
contexten_cache_requests_total contexten_llm_tokens_total contexten_queue_depth
""".split()
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$stage": ".*"}


def check_dashboard(path: Path, rep: Report) -> None:
    print(f"grafana dashboard {path.name}")
    dash = json.loads(path.read_text())
    exprs, bad, ids = [], [], []
    for panel in dash["panels"]:
        ids.append(panel["id"])
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            exprs.append(expr)
            try:
                promql_parser.parse(expr)
            except Exception as e:  # the parser raises plain exceptions
                bad.append(f"{panel['title']}: {e}")
    rep.check(not bad and bool(exprs), f"{len(exprs)} PromQL expressions parse", "; ".join(bad))
    missing = [m for m in FLEET_METRICS if not any(m in e for e in exprs)]
    rep.check(not missing, f"all {len(FLEET_METRICS)} fleet metrics are charted", "not charted: " + ", ".join(missing))
    rep.check(len(ids) == len(set(ids)), "panel ids are unique")


def check_compose(path: Path, rep: Report) -> None:
    print(f"compose file {path.name}")
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    problems = [s for s in ("rabbitmq", "redis", "otel-collector", "jaeger") if s not in services]
    for binary, listener in [("ingest", "INGEST_ADDR"), *((b, "HEALTH_ADDR") for b in WORKER_BINARIES.values())]:
        svc = services.get(binary)
        if not svc:
            problems.append(f"no service {binary}")
            continue
        env = svc.get("environment", {})
        if svc.get("command") != [binary]:
            problems.append(f"{binary}: command {svc.get('command')}")
        if svc.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{binary}: not built from deploy/Dockerfile")
        if not str(env.get(listener, "")).startswith("0.0.0.0:"):
            problems.append(f"{binary}: {listener} does not listen on 0.0.0.0")
        for var in ("AMQP_URL", "REDIS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"):
            if var not in env:
                problems.append(f"{binary}: no {var}")
    rep.check(not problems, "broker, Redis, collector, Jaeger and the five services are wired", "; ".join(problems))


def check_dockerfile(path: Path, rep: Report) -> None:
    print(f"Dockerfile {path.relative_to(path.parent.parent)}")
    try:
        cmds = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as e:
        rep.check(False, "Dockerfile parses", str(e))
        return
    stages = [i for i, c in enumerate(cmds) if c.cmd == "FROM"]
    runtime = cmds[stages[-1]:] if stages else []
    text = path.read_text()
    problems = []
    if len(stages) < 2:
        problems.append("not multi-stage")
    if not any("--mount=type=cache,target=/usr/local/cargo/registry" in f for c in cmds for f in c.flags):
        problems.append("no cargo registry cache mount")
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append("runtime stage does not switch to a non-root USER")
    installs = " ".join(c.value[0] for c in runtime if c.cmd == "RUN")
    for pkg in ("ca-certificates", "git"):
        if f" {pkg}" not in installs:
            problems.append(f"runtime stage does not install {pkg}")
    for binary in ["ingest", *WORKER_BINARIES.values()]:
        if binary not in text:
            problems.append(f"binary {binary} is not copied")
    if not any(c.cmd == "CMD" for c in runtime):
        problems.append("no default CMD")
    rep.check(not problems, f"parses: {len(stages)} stages, cache mounts, non-root runtime with CA certificates and git",
              "; ".join(problems))


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True, type=Path)
    ap.add_argument("--kube-versions", default="1.29.0,1.37.0",
                    help="Kubernetes versions to render for and validate against")
    args = ap.parse_args()
    chart = args.chart.resolve()
    rep = Report()
    versions = [v for v in args.kube_versions.split(",") if v]
    shipped = kv.all_versions()
    for v in versions:
        if kv.major_minor(v) not in {kv.major_minor(s) for s in shipped}:
            print(f"kubernetes-validate ships {shipped[0]}..{shipped[-1]}, not {v}", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="chart-check-") as tmp:
        helm = Helm(args.helm, chart, Path(tmp))
        prod = chart / "values-production.yaml"
        values = yaml.safe_load((chart / "values.yaml").read_text())
        schema = json.loads((chart / "values.schema.json").read_text())

        print("helm lint")
        for label, files in (("default", []), ("production", [prod])):
            res = helm.run(["lint", "--strict", str(chart), *sum((["-f", str(f)] for f in files), [])])
            rep.check(res.returncode == 0, f"[{label}] helm lint --strict",
                      (res.stdout + res.stderr).strip().replace("\n", " / "))

        print("helm template + kubernetes-validate + fleet rules")
        scenarios = [
            ("default", [], []),
            ("default+KEDA", [], ["keda.sh/v1alpha1"]),
            ("production", [prod], ["keda.sh/v1alpha1", "monitoring.coreos.com/v1"]),
        ]
        for label, files, apis in scenarios:
            for v in versions:
                docs, err = helm.template(files=files, kube_version=v, api_versions=apis)
                if not rep.check(docs is not None, f"[{label}] helm template --kube-version {v}", err):
                    continue
                validate_docs(label, docs, v, rep)
            if docs is not None:
                check_fleet_rules(label, docs, rep)
            check_notes(helm, label, files, apis, rep)

        check_settings_reach_containers(helm, values, schema, rep)
        check_bad_values(helm, rep)
        check_dashboard(HERE.parent / "grafana" / "contexten.json", rep)
        check_compose(HERE.parent / "docker-compose.yml", rep)
        check_dockerfile(HERE.parent / "Dockerfile", rep)

    print()
    print(f"chart-check: {rep.passed} passed, {len(rep.failed)} failed")
    for f in rep.failed:
        print(f"  failed: {f}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
