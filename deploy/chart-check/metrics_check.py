"""Queries that can fail: every metric a dashboard panel or an alert rule
queries must be one some component exports, and the chart's alert rules pass
`promtool check rules` and the unit tests in alerts.test.yaml.

The exported names are not kept here: metrics/contexten.txt is written by the
telemetry catalog's test (the fleet's own metrics) and metrics/rabbitmq.txt
by shared/testkit/tests/rabbitmq_metrics.rs (RabbitMQ's rabbitmq_prometheus
plugin, collected from a real node); one `name label1,label2` per line.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import promql_parser
import yaml

from common import HERE, Helm, Report

METRIC_LISTS = ("contexten.txt", "rabbitmq.txt")
# Labels Prometheus adds when it scrapes (static_configs in
# deploy/observability/prometheus.yml, ServiceMonitor targets) or that the
# sample suffix brings.
TARGET_LABELS = {"job", "instance", "service", "pod", "namespace", "container", "endpoint", "__name__"}
HISTOGRAM_SUFFIXES = {"_bucket": {"le"}, "_sum": set(), "_count": set()}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m", "$stage": ".*",
                "$prefix": "contexten"}


def load_exported(metrics_dir: Path) -> tuple[dict[str, set[str]], list[str]]:
    """name -> label names, from the collected lists; the missing lists."""
    known: dict[str, set[str]] = {}
    missing = []
    for name in METRIC_LISTS:
        path = metrics_dir / name
        if not path.exists():
            missing.append(name)
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            metric, _, labels = line.partition(" ")
            known.setdefault(metric, set()).update(l for l in labels.split(",") if l)
    return known, missing


def labels_of(name: str, known: dict[str, set[str]]) -> set[str] | None:
    """The labels a queried sample name carries, None when nothing exports it.
    A histogram listed by its family name answers for _bucket, _sum, _count."""
    if name in known:
        return known[name]
    for suffix, extra in HISTOGRAM_SUFFIXES.items():
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return known[name[: -len(suffix)]] | extra
    return None


def selectors(expr) -> list:
    """Every VectorSelector of a parsed PromQL expression."""
    found, stack = [], [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        elif isinstance(node, promql_parser.MatrixSelector):
            stack.append(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            stack += [node.lhs, node.rhs]
        elif isinstance(node, promql_parser.Call):
            stack += list(node.args)
        elif isinstance(node, (promql_parser.AggregateExpr, promql_parser.ParenExpr,
                               promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            stack.append(node.expr)
            if isinstance(node, promql_parser.AggregateExpr) and node.param is not None:
                stack.append(node.param)
    return found


def unknown_queries(where: str, expr: str, known: dict[str, set[str]]) -> list[str]:
    """What `expr` queries that nothing exports: metric names, and label
    names a selector matches on that the metric does not carry."""
    try:
        parsed = promql_parser.parse(expr)
    except Exception as e:  # the parser raises plain exceptions
        return [f"{where}: does not parse: {e}"]
    problems = []
    for sel in selectors(parsed):
        name = sel.name
        matchers = list(sel.matchers.matchers) if sel.matchers else []
        if not name:
            problems.append(f"{where}: a selector without a metric name ({sel.prettify()})")
            continue
        labels = labels_of(name, known)
        if labels is None:
            problems.append(f"{where}: {name} is exported by no component")
            continue
        for m in matchers:
            if m.name not in labels and m.name not in TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {m.name}")
    return problems


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable, Grafana's
    variables replaced by sample values."""
    out = []
    for panel in dash.get("panels", []):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((f"panel {panel['title']!r}", expr))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        m = re.match(r"\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_]\w*)\s*\)\s*$", query)
        if m:
            out.append((f"variable {var['name']!r}", m.group(1)))
    return out


def rule_queries(rules: dict) -> list[tuple[str, str]]:
    return [(f"alert {r.get('alert') or r.get('record')}", str(r["expr"]))
            for g in rules["groups"] for r in g["rules"]]


def render_rules(helm: Helm, values: dict | None = None) -> tuple[dict | None, str]:
    """The chart's PrometheusRule as a Prometheus rules file ({groups: ...})."""
    base = {"prometheusRule": {"enabled": True, "runbookBaseUrl": "https://example.invalid/operations.md"}}
    docs, err = helm.template(values=base if values is None else values,
                              api_versions=["monitoring.coreos.com/v1"])
    if docs is None:
        return None, err
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        return None, f"{len(rules)} PrometheusRule objects rendered"
    return {"groups": rules[0]["spec"]["groups"]}, ""


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def check_rules(helm: Helm, promtool: str, workdir: Path, operations_md: Path, rep: Report) -> dict | None:
    print("alert rules (PrometheusRule, promtool)")
    rules, err = render_rules(helm)
    if not rep.check(rules is not None, "the PrometheusRule renders", err):
        return None
    rules_file = workdir / "contexten-rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
    res = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    rep.check(res.returncode == 0, f"promtool check rules: {len(alerts)} alerts",
              (res.stdout + res.stderr).strip().replace("\n", " / "))

    # The unit tests name their rules file `contexten-rules.yaml`, next to them.
    tests = HERE / "alerts.test.yaml"
    (workdir / tests.name).write_text(tests.read_text())
    res = subprocess.run([promtool, "test", "rules", tests.name], capture_output=True, text=True, cwd=workdir)
    spec = yaml.safe_load(tests.read_text())
    tested = {a["alertname"] for t in spec.get("tests", []) for a in t.get("alert_rule_test", [])}
    rep.check(res.returncode == 0 and len(tested & set(alerts)) >= 3,
              f"promtool test rules {tests.name}: {len(tested & set(alerts))} of {len(alerts)} alerts unit-tested",
              (res.stdout + res.stderr).strip().replace("\n", " / ")
              + (f" / tested alerts the chart lacks: {sorted(tested - set(alerts))}" if tested - set(alerts) else ""))

    anchors = heading_anchors(operations_md.read_text())
    no_runbook = []
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            ann = r.get("annotations", {})
            anchor = ann.get("runbook", "").partition("#")[2]
            if not anchor or anchor not in anchors or not ann.get("runbook_url", "").endswith("#" + anchor):
                no_runbook.append(f"{r['alert']} ({ann.get('runbook', 'no runbook')})")
    rep.check(not no_runbook, f"every alert links a runbook section of {operations_md.name}",
              "; ".join(no_runbook))
    return rules


def check_queries(label: str, queries: list[tuple[str, str]], known: dict[str, set[str]], rep: Report) -> list[str]:
    problems = [p for where, expr in queries for p in unknown_queries(where, expr, known)]
    rep.check(bool(queries) and not problems,
              f"{label}: the {len(queries)} queries ask only for exported metrics and labels",
              "; ".join(problems))
    return problems


def check_exported(metrics_dir: Path, dashboard: Path, rules: dict | None, rep: Report) -> None:
    """The shipped dashboard and alerts against the collected lists, then the
    self-tests: each bad-queries/*.yaml breaks a copy and the check must fail
    naming what it broke."""
    print("queried metrics are exported (metrics/*.txt)")
    known, missing = load_exported(metrics_dir)
    if not rep.check(not missing, f"metric lists present ({len(known)} names)",
                     "missing: " + ", ".join(missing)):
        return
    dash = json.loads(dashboard.read_text())
    check_queries(f"dashboard {dashboard.name}", dashboard_queries(dash), known, rep)
    if rules is not None:
        check_queries("alert rules", rule_queries(rules), known, rep)

    for case in sorted((HERE / "bad-queries").glob("*.yaml")):
        spec = yaml.safe_load(case.read_text())
        if spec["target"] == "dashboard":
            text = dashboard.read_text()
        elif rules is not None:
            text = json.dumps(rules)
        else:
            rep.check(False, f"{case.name} fails the check", "no rules rendered")
            continue
        broken = text.replace(spec["replace"], spec["with"])
        if broken == text:
            rep.check(False, f"{case.name} fails the check", f"{spec['replace']!r} is not in the {spec['target']}")
            continue
        data = json.loads(broken)
        queries = dashboard_queries(data) if spec["target"] == "dashboard" else rule_queries(data)
        problems = [p for where, expr in queries for p in unknown_queries(where, expr, known)]
        rep.check(any(spec["expect"] in p for p in problems),
                  f"{case.name} fails the check ({spec['expect']})",
                  "the check reported: " + ("; ".join(problems) or "nothing"))
