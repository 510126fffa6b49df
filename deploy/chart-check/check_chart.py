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
   secrets, apiTokens, routingRules, policy, the broker/Redis connection values, the
   per-worker prefetch/ports and the writable volumes is changed alone, and
   the effective environment (env, envFrom, secretKeyRef/configMapKeyRef
   resolved, mounted Secret/ConfigMap files, volumes) of some container must
   change, showing the new value where it is a string. With everything set,
   every variable a binary reads (docs/design.md §11 and the rest, common.BINARY_READS)
   must appear in some container and none in a binary that does not read it;
   written paths must lie in writable volumes and read files be mounted.
   With secrets.mountAsFiles, each container gets `<NAME>_FILE` for exactly
   the secrets its binary reads as files (common.SECRET_FILES), no plain
   variable beside them, a read-only directory mount of its own keys, and a
   rotated file secret rolls no pod (secret_files.py).
5. Negative tests: each bad-values/*.yaml must be rejected by the chart, with
   every `# expect:` message of the file in helm's error output.
6. The Grafana dashboard: every PromQL expression parses (promql-parser); the
   chart's alert rules pass `promtool check rules` and the unit tests in
   alerts.test.yaml and each links its runbook in docs/operations.md; every
   metric and label the dashboard and the alerts query is one some component
   exports (metrics/*.txt, collected by tests, never kept by hand), and each
   bad-queries/*.yaml (a misspelled metric or label) makes that check fail
   (metrics_check.py); the compose file wires the five services;
   the Dockerfile parses (BuildKit's parser) and keeps its promises (cache
   mounts, a non-root runtime with CA certificates and git, every binary).

Prints one line per check and a summary; exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate.utils as kv
import yaml

from artefacts import check_compose, check_dashboard, check_dockerfile, check_notes
from common import HERE, RELEASE, WORKER_BINARIES, Helm, Report
from metrics_check import check_exported, check_rules
from secret_files import check_secret_files, files_values
from settings_reach import check_settings_reach_containers

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}


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

    # the workers' ConfigMaps carry SHUTDOWN_TIMEOUT_SECS (one value for the fleet)
    timeout = max((int(d.get("data", {}).get("SHUTDOWN_TIMEOUT_SECS", "30")) for d in docs
                   if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")), default=30)
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


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True, type=Path)
    ap.add_argument("--promtool", required=True, help="promtool, for the alert rules' unit tests")
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
        as_files = Path(tmp) / "secrets-as-files.yaml"
        as_files.write_text(yaml.safe_dump(files_values(values, schema)))
        # The bundled broker's ServiceMonitor (rabbitmq_prometheus) and the
        # alert rules, which the production values (external broker) do not show.
        monitoring = Path(tmp) / "monitoring.yaml"
        monitoring.write_text(yaml.safe_dump({"serviceMonitor": {"enabled": True},
                                              "prometheusRule": {"enabled": True}}))
        # The bundled broker as a three-node cluster (peer discovery, RBAC,
        # the cookie) with quorum queues, and Redis behind sentinels.
        cluster = Path(tmp) / "cluster.yaml"
        cluster.write_text(yaml.safe_dump({
            "rabbitmq": {"bundled": {"replicas": 3}},
            "config": {"queueType": "quorum", "redisSentinels": "s0:26379,s1:26379,s2:26379",
                       "redisSentinelMaster": "contexten", "redisWaitReplicas": 1}}))
        scenarios = [
            ("default", [], []),
            ("bundled cluster", [cluster], []),
            ("default+monitoring", [monitoring], ["monitoring.coreos.com/v1"]),
            ("default+KEDA", [], ["keda.sh/v1alpha1"]),
            ("production", [prod], ["keda.sh/v1alpha1", "monitoring.coreos.com/v1"]),
            ("secrets as files", [as_files], []),
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
        check_secret_files(helm, values, schema, rep)
        check_bad_values(helm, rep)
        check_dashboard(HERE.parent / "grafana" / "contexten.json", rep)
        rules = check_rules(helm, args.promtool, Path(tmp), HERE.parent.parent / "docs" / "operations.md", rep)
        check_exported(HERE / "metrics", HERE.parent / "grafana" / "contexten.json", rules, rep)
        check_compose(HERE.parent / "docker-compose.yml", rep)
        check_dockerfile(HERE.parent / "Dockerfile", rep)

    print()
    print(f"chart-check: {rep.passed} passed, {len(rep.failed)} failed")
    for f in rep.failed:
        print(f"  failed: {f}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
