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
