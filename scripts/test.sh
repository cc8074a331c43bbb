#!/usr/bin/env bash
# The project's test command (see README):  bash scripts/test.sh [extra pytest args]
#   1. install the test dependencies (kcat, pinned Python packages, DynamoDB Local)
#   2. cargo test --release --workspace --locked --no-run   (one profile everywhere: release;
#      builds the tests and the kafscale binary in one go, see below)
#   3. cargo test --release --workspace --locked
#   4. the DynamoDB metadata-store tests against DynamoDB Local, in a private network namespace
#   5. the deployment files, offline: python3 -m pytest -q tests/infra (helm lint/template,
#      kubernetes-validate, KEDA and Prometheus Operator schemas, checkov, python-hcl2, the
#      IAM policies against the code, promtool rule tests; tools from
#      scripts/install-infra-tools.sh, cached outside the clone)
#   6. librdkafka's own integration test suite against target/release/kafscale standalone,
#      checked against tests/librdkafka/allowlist.txt, then its security pass over SASL_SSL
#      (tests/librdkafka/security-tests.txt, checked against security-allowlist.txt; about two
#      minutes) (scripts/librdkafka-suite.sh; the build of librdkafka and its test-runner is
#      cached outside the clone)
#   7. python3 -m pytest -q tests/e2e  against target/release/kafscale, also in a private
#      network namespace with DynamoDB Local (distributed mode runs on it and on moto's S3)
# Respects CARGO_TARGET_DIR.  Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n========== %s ==========\n' "$*"; }

section "1/7 test dependencies: scripts/install-test-deps.sh"
bash scripts/install-test-deps.sh

# One build of the dependency graph, not two: `cargo build` would compile the workspace's
# dependencies (the AWS SDK above all) with the normal features and `cargo test` again with the
# dev-dependencies' features unified in, which costs a cold CI run about 8 more minutes. Building
# the tests also builds target/release/kafscale (the root package has integration tests), with
# the same code; the e2e step runs that binary.
section "2/7 build: cargo test --release --workspace --locked --no-run"
cargo test --release --workspace --locked --no-run

section "3/7 unit and integration tests: cargo test --release --workspace --locked"
cargo test --release --workspace --locked

# The test binary is the one step 3 built (`--workspace` keeps the features of step 3, so
# nothing is rebuilt); offline, since the namespace has no network. KAFSCALE_REQUIRE_DYNAMODB
# turns a missing endpoint into a failure instead of a skip.
section "4/7 DynamoDB backend: scripts/with-dynamodb-local.sh cargo test --test dynamodb_conformance"
KAFSCALE_REQUIRE_DYNAMODB=1 bash scripts/with-dynamodb-local.sh \
    cargo test --release --locked --offline --workspace --test dynamodb_conformance

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
    /*) ;;
    *) target_dir="$PWD/$target_dir" ;;
esac
export KAFSCALE_BIN="$target_dir/release/kafscale"
if [[ ! -x "$KAFSCALE_BIN" ]]; then
    echo "test.sh: $KAFSCALE_BIN was not built" >&2
    exit 1
fi

# No cluster and no cloud: the chart, the Terraform module, the Dockerfile and the alerts are
# checked with the real tools (about half a minute). The chart's flags are checked against the
# binary's --help, hence after the build.
section "5/7 deployment files: python3 -m pytest -q tests/infra"
python3 -m pytest -q tests/infra

# Standalone only, on 127.0.0.1 (no namespace needed). Building librdkafka and its test-runner
# (about 2.5 minutes on 2 cores) happens once per machine and version; the run is bounded per
# test and in total (tests/librdkafka/run_suite.py).
section "6/7 librdkafka's test suite: scripts/librdkafka-suite.sh (KAFSCALE_BIN=$KAFSCALE_BIN)"
bash scripts/librdkafka-suite.sh

section "7/7 end-to-end tests: scripts/with-dynamodb-local.sh python3 -m pytest -q tests/e2e (KAFSCALE_BIN=$KAFSCALE_BIN)"
# Standalone and distributed mode. The distributed tests need DynamoDB Local (which listens on
# every interface, hence the namespace) and start moto's S3 server themselves.
# pytest's summary line stays the last line of the output (CI reads it).
KAFSCALE_REQUIRE_DYNAMODB=1 bash scripts/with-dynamodb-local.sh python3 -m pytest -q tests/e2e "$@"
