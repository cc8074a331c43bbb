#!/usr/bin/env bash
# kafscale against tansu 0.6.0 in the same run, with the same client (tests/e2e/bench_peer.py
# says what it measures). Not run in CI.
#
#   KAFSCALE_BIN=target/release/kafscale bash scripts/bench-peer.sh [bench_peer.py flags]
#
# Installs tansu 0.6.0 into $TANSU_ROOT (default /var/cache/tansu) when $TANSU_BIN is not set
# and no tansu is there: `cargo install` with its SQLite engine, about 22 minutes on 2 cores.
# Bounded: every workload has a record count or a duration and a timeout; brokers listen on
# 127.0.0.1 only and are killed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
TANSU_ROOT=${TANSU_ROOT:-/var/cache/tansu}
if [ -z "${TANSU_BIN:-}" ]; then
    TANSU_BIN=$TANSU_ROOT/bin/tansu
    if [ ! -x "$TANSU_BIN" ]; then
        echo "installing tansu 0.6.0 into $TANSU_ROOT (about 22 minutes)" >&2
        CARGO_TARGET_DIR=$TANSU_ROOT/target cargo install tansu@0.6.0 --locked \
            --features dynostore,libsql --root "$TANSU_ROOT"
    fi
fi
export TANSU_BIN
python3 -c 'import confluent_kafka' 2>/dev/null || pip install -q -r tests/e2e/requirements.txt
exec python3 tests/e2e/bench_peer.py "$@"
