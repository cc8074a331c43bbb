#!/usr/bin/env bash
# One benchmark of standalone mode: starts `kafscale standalone` on a fresh data directory
# (extra server flags from $SERVER_ARGS, e.g. "--simulate-object-store s3-standard"), runs
# kafscale-loadtest with the arguments given, prints the loadtest summary, the server's CPU
# seconds during the run and per GiB acknowledged, what its requests cost per GiB produced
# (kafscale cost), and stops the server.
#
#   bash scripts/bench-standalone.sh --records 1000000 --record-size 1024 --partitions 16
#
# Bounded: the loadtest stops by itself; the server is killed on exit. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${KAFSCALE_BIN:-target/release/kafscale}
LOADTEST=$(dirname "$BIN")/kafscale-loadtest
[ -x "$BIN" ] && [ -x "$LOADTEST" ] || { echo "build first: cargo build --release --workspace" >&2; exit 2; }
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$BIN" standalone --data-dir "$dir/data" --kafka-addr "127.0.0.1:$port" --http-addr "127.0.0.1:$http" \
    ${SERVER_ARGS:-} > "$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q "listening" "$dir/server.log" && break; sleep 0.1; done
cpu() { awk '{print $14, $15}' "/proc/$pid/stat"; }  # user and system ticks
before=$(cpu)
"$BIN" cost --metrics "http://127.0.0.1:$http/metrics" --save "$dir/cost.json" 2>/dev/null
"$LOADTEST" --bootstrap "127.0.0.1:$port" --topic bench --json "$dir/result.json" "$@"
after=$(cpu)
# What the run's requests cost per GiB (docs/cost.md); $COST_ARGS picks other prices.
# shellcheck disable=SC2086
"$BIN" cost --metrics "http://127.0.0.1:$http/metrics" --since "$dir/cost.json" ${COST_ARGS:-}
python3 - "$dir/result.json" "$before" "$after" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
ticks = os.sysconf("SC_CLK_TCK")
user, system = (
    (float(a) - float(b)) / ticks for a, b in zip(sys.argv[3].split(), sys.argv[2].split())
)
cpu = user + system
cfg = r["config"]
gib = r["records_acked"] * cfg["record_size"] / 2**30
per = (lambda s: s / gib) if gib else (lambda s: 0.0)
print(f"server CPU: {cpu:.2f} s during the run ({user:.2f} user, {system:.2f} system), "
      f"{per(cpu):.2f} s per GiB acknowledged ({per(user):.2f} user, {per(system):.2f} system)")
PY
kill -TERM $pid; wait $pid 2>/dev/null || true
grep -E "simulated (object|metadata)-store requests" "$dir/server.log" | sed -E 's/^.*INFO [^ ]+: //' || true
