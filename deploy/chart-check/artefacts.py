"""Checks of the chart's NOTES.txt and of the other deploy artefacts: the
Grafana dashboard, the compose file and the Dockerfile."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dockerfile
import promql_parser
import yaml

from common import BINARY_READS, RELEASE, WORKER_BINARIES, Helm, Report
from metrics_check import GRAFANA_VARS

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
    # Whether they query exported metrics: metrics_check.check_exported.
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
        if "env_file" in svc:
            problems.append(f"{binary}: env_file hands every variable to every binary")
    rep.check(not problems, "broker, Redis, collector, Jaeger and the five services are wired", "; ".join(problems))

    # The broker serves its queue metrics and the compose Prometheus scrapes them
    # (the dashboard's queue panels, docs/operations.md "5. Alerts").
    plugin = []
    mounts = [str(v) for v in services["rabbitmq"].get("volumes", [])]
    plugins = next((path.parent / m.split(":")[0] for m in mounts if ":/etc/rabbitmq/enabled_plugins" in m), None)
    if plugins is None or "rabbitmq_prometheus" not in plugins.read_text():
        plugin.append("the rabbitmq service does not enable rabbitmq_prometheus")
    if not any(str(p).split(":")[-1] == "15692" for p in services["rabbitmq"].get("ports", [])):
        plugin.append("port 15692 is not published")
    prom = yaml.safe_load((path.parent / "observability" / "prometheus.yml").read_text())
    if not any(t == "rabbitmq:15692" and job.get("metrics_path") == "/metrics/per-object"
               for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]):
        plugin.append("observability/prometheus.yml does not scrape rabbitmq:15692/metrics/per-object")
    rep.check(not plugin, "the broker's Prometheus plugin is on and scraped per queue", "; ".join(plugin))

    # Each binary gets exactly what it reads: nothing else, nothing missing.
    wrong = []
    for binary, reads in BINARY_READS.items():
        env = set(services.get(binary, {}).get("environment", {}))
        if env - reads:
            wrong.append(f"{binary} does not read {', '.join(sorted(env - reads))}")
        if reads - env:
            wrong.append(f"{binary} misses {', '.join(sorted(reads - env))}")
    rep.check(not wrong, f"every service gets exactly the variables its binary reads "
              f"({len(set().union(*BINARY_READS.values()))} variables)", "; ".join(wrong))

    # Every variable taken from contexten.env is documented in its example.
    example = (path.parent / "contexten.env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.M))
    uncommented = "\n".join(line.split(" #")[0] for line in path.read_text().splitlines()
                            if not line.lstrip().startswith("#"))
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", uncommented)) - {"CONTEXTEN_IMAGE"}
    undocumented = sorted(interpolated - documented)
    rep.check(not undocumented, f"contexten.env.example documents the {len(interpolated)} variables compose takes from it",
              "undocumented: " + ", ".join(undocumented))


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
