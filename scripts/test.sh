#!/usr/bin/env bash
# The project's test command (see README):  bash scripts/test.sh [extra pytest args]
#   1. install the e2e test dependencies (kcat, pinned Python packages)
#   2. cargo build --release --locked         (one profile everywhere: release)
#   3. cargo test --release --workspace --locked
#   4. python3 -m pytest -q tests/e2e  against target/release/kafscale
# Respects CARGO_TARGET_DIR.  Exits non-zero on the first failing step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n========== %s ==========\n' "$*"; }

section "1/4 test dependencies: scripts/install-test-deps.sh"
bash scripts/install-test-deps.sh

section "2/4 build: cargo build --release --locked"
cargo build --release --locked

section "3/4 unit and integration tests: cargo test --release --workspace --locked"
cargo test --release --workspace --locked

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

section "4/4 end-to-end tests: python3 -m pytest -q tests/e2e (KAFSCALE_BIN=$KAFSCALE_BIN)"
# pytest's summary line stays the last line of the output (CI reads it).
python3 -m pytest -q tests/e2e "$@"
