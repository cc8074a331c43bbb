#!/usr/bin/env bash
# Runs a command next to a fresh, in-memory DynamoDB Local, with neither visible to the network:
#
#   bash scripts/with-dynamodb-local.sh cargo test --release --locked --offline \
#       --workspace --test dynamodb_conformance
#
# DynamoDB Local cannot be told which address to bind: it listens on every interface. So it runs,
# together with CMD, in private network, PID and mount namespaces (`unshare --net --pid
# --mount-proc`) whose only network interface is loopback: nothing outside can reach it, and
# neither it nor CMD can reach anything outside (so CMD must not need the network: build first,
# then `cargo --offline`). Port 8000 is free in a new namespace, so concurrent runs do not
# collide. CMD runs with stdin from /dev/null and sees:
#   KAFSCALE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:8000
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION  dummy values (DynamoDB Local accepts
#       any key id of letters and digits)
#   AWS_EC2_METADATA_DISABLED=true, AWS_PROFILE, AWS_SESSION_TOKEN and AWS_ENDPOINT_URL* unset
# DynamoDB Local is stopped when CMD ends, however it ends: the inner shell kills it on exit, and
# it is PID 1 of the PID namespace, so if it dies in any way the kernel kills every process left
# in the namespace. SIGINT/SIGTERM to this script are passed to the inner shell, and if this
# script is killed outright, `unshare` dies with it and its --kill-child sends the inner shell
# SIGTERM.
#
# Needs unshare and ip (util-linux, iproute2), root or unprivileged user namespaces, Java 17+,
# and scripts/install-dynamodb-local.sh to have run. Exit status: CMD's, or 1 if the server did
# not start.
set -euo pipefail

PORT=8000
START_TIMEOUT_S="${KAFSCALE_DYNAMODB_START_TIMEOUT:-90}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -eq 0 ]]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

if [[ "${KAFSCALE_DDB_INNER:-}" != "1" ]]; then
    # Outside: check the tools, find the server, re-run this script in new namespaces.
    for tool in unshare ip java; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "with-dynamodb-local: '$tool' not found (packages util-linux, iproute2, a JRE 17+)" >&2
            exit 1
        }
    done
    jar="$(bash "$here/install-dynamodb-local.sh" --print-jar)" || {
        echo "with-dynamodb-local: DynamoDB Local is not installed; run scripts/install-dynamodb-local.sh" >&2
        exit 1
    }
    ns_args=(--net --pid --fork --kill-child=SIGTERM --mount-proc)
    # Without root, a user namespace (mapping us to root in it) grants the rights for the rest.
    [[ "$(id -u)" -eq 0 ]] || ns_args+=(--map-root-user)
    # If this shell is killed outright, unshare dies with it (setpriv sets its parent-death
    # signal), and unshare's --kill-child then stops the namespace's init, the inner shell.
    launcher=()
    if command -v setpriv >/dev/null 2>&1; then launcher=(setpriv --pdeathsig KILL); fi
    "${launcher[@]}" unshare "${ns_args[@]}" -- \
        env KAFSCALE_DDB_INNER=1 KAFSCALE_DDB_JAR="$jar" bash "$here/with-dynamodb-local.sh" "$@" &
    unshare_pid=$!
    # unshare blocks SIGINT and SIGTERM and does not pass them on: pass them to the inner shell
    # (its only child), which stops CMD and the server and exits.
    forward() {
        local inner
        inner="$(pgrep -P "$unshare_pid" 2>/dev/null | head -n 1 || true)"
        if [[ -n "$inner" ]]; then kill -TERM "$inner" 2>/dev/null || true; fi
    }
    trap forward INT TERM
    status=0
    while kill -0 "$unshare_pid" 2>/dev/null; do
        # Returns early (status > 128) when a trapped signal arrives; then wait on.
        wait "$unshare_pid" && status=0 || status=$?
    done
    exit "$status"
fi

# Inside: loopback only, and this shell is PID 1 of its PID namespace.
unset KAFSCALE_DDB_INNER
ip link set lo up

log="$(mktemp -t dynamodb-local.XXXXXX.log)"
server_pid=""
cmd_pid=""
stop_all() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$cmd_pid" ]]; then kill "$cmd_pid" 2>/dev/null || true; fi
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -f "$log"
    exit "$status"
}
trap stop_all EXIT
# PID 1 ignores signals it has no handler for: handle SIGTERM, which the outer shell forwards
# (SIGINT is ignored here: this shell was started in the background).
trap 'exit 143' TERM

jar_dir="$(dirname "$KAFSCALE_DDB_JAR")"
(
    cd "$jar_dir"
    DDB_LOCAL_TELEMETRY=0 exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
        -inMemory -port "$PORT" -disableTelemetry
) >"$log" 2>&1 &
server_pid=$!
unset KAFSCALE_DDB_JAR

endpoint="http://127.0.0.1:$PORT"
answers() {
    # Any DynamoDB JSON answer (even an authentication error) means the server is serving.
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 2 -X POST "$endpoint/" \
            -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
            -H 'Content-Type: application/x-amz-json-1.0' -d '{}'
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
    fi
}
deadline=$((SECONDS + START_TIMEOUT_S))
until answers; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "with-dynamodb-local: DynamoDB Local exited during startup:" >&2
        cat "$log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "with-dynamodb-local: DynamoDB Local did not answer on $endpoint within ${START_TIMEOUT_S}s:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "with-dynamodb-local: DynamoDB Local ($(grep -m1 -o 'Version:.*' "$log" | tr -d '\t' || echo 'version unknown')) on $endpoint in a private network namespace" >&2

export KAFSCALE_TEST_DYNAMODB_ENDPOINT="$endpoint"
export AWS_ACCESS_KEY_ID="kafscaletest" AWS_SECRET_ACCESS_KEY="kafscaletest" AWS_REGION="us-east-1"
export AWS_EC2_METADATA_DISABLED="true"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_DYNAMODB

# In the background so that a signal to this shell is handled at once (and passed on).
set +e
"$@" &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=""
set -e
if [[ $status -ne 0 ]]; then
    echo "with-dynamodb-local: '$*' exited with $status; DynamoDB Local's log:" >&2
    tail -n 30 "$log" >&2
fi
exit "$status"
