#!/usr/bin/env bash
# Runs librdkafka's own integration test suite against `kafscale standalone`:
#   bash scripts/librdkafka-suite.sh [run_suite.py options, e.g. --only 0030,0045 --jobs 1]
#
#   1. scripts/install-librdkafka-suite.sh builds librdkafka 2.12.0 and its test-runner once
#      (cached outside the clone, keyed by version);
#   2. tests/librdkafka/run_suite.py starts kafscale standalone (fresh data dirs, free
#      127.0.0.1 ports), runs every broker test of the suite except those in
#      tests/librdkafka/skip.txt, and checks the outcome against tests/librdkafka/allowlist.txt:
#      an allowed test that does not pass fails the run, and so does a passing test that is not
#      on the list (the plain pass);
#   3. it then does the same against a kafscale standalone with TLS and SASL (SASL_SSL,
#      SCRAM-SHA-512, certificates made with openssl for the run) for the tests of
#      tests/librdkafka/security-tests.txt, checked against
#      tests/librdkafka/security-allowlist.txt (the security pass; --passes chooses).
# The binary is $KAFSCALE_BIN, else $CARGO_TARGET_DIR/release/kafscale, else
# target/release/kafscale. Logs go to $LIBRDKAFKA_SUITE_WORKDIR (default: a fresh temp dir),
# whose path is printed. Each test number has a wall-clock limit and each pass another
# (see run_suite.py --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${KAFSCALE_BIN:-}" ]]; then
    target_dir="${CARGO_TARGET_DIR:-target}"
    KAFSCALE_BIN="$target_dir/release/kafscale"
fi
if [[ ! -x "$KAFSCALE_BIN" ]]; then
    echo "librdkafka-suite: $KAFSCALE_BIN not found: build it (cargo build --release) or set KAFSCALE_BIN" >&2
    exit 1
fi

bash scripts/install-librdkafka-suite.sh
build_dir="$(bash scripts/install-librdkafka-suite.sh --print-dir)"

workdir_args=()
if [[ -n "${LIBRDKAFKA_SUITE_WORKDIR:-}" ]]; then
    workdir_args=(--workdir "$LIBRDKAFKA_SUITE_WORKDIR")
fi
exec "${PYTHON:-python3}" tests/librdkafka/run_suite.py --build-dir "$build_dir" \
    --kafscale-bin "$KAFSCALE_BIN" "${workdir_args[@]}" "$@"
