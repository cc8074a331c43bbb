#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and handlers (docs/fuzzing.md):
#
#   bash scripts/fuzz.sh [--seconds N] [--build-only] [TARGET...]   build, then run each target
#   bash scripts/fuzz.sh --write-seeds                             regenerate fuzz/corpus/*/seed-*
#   bash scripts/fuzz.sh --import-frames DIR                       frames from fuzz-capture.py
#                                                                  into fuzz/corpus/*/client-*
#
# cargo-fuzz (libFuzzer) on stable Rust: `-s none` (no sanitizer: the code has no unsafe, and
# AddressSanitizer needs a nightly compiler), so a finding is a panic, an abort (a failed or
# oversized allocation: -malloc_limit_mb), an input slower than -timeout, or a request the
# harness sees hang. cargo-fuzz is installed once (pinned) and the targets are built in a
# target folder, both in a cache outside the clone (KAFSCALE_CACHE, else /var/cache/kafscale-ci,
# else ~/.cache/kafscale). Each target runs for N seconds (default 30, or KAFSCALE_FUZZ_SECONDS)
# from its checked-in corpus plus a scratch folder for what it finds; the first crash stops the
# run with its input saved under fuzz/artifacts/TARGET/ (the path is printed, with the command
# that replays it). Exits non-zero on a crash or a build failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(request_frame produce fetch groups topics commit meta_items record_batch segment sasl)

seconds="${KAFSCALE_FUZZ_SECONDS:-30}"
build_only=false
write_seeds=false
import_frames=""
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --build-only) build_only=true; shift ;;
        --write-seeds) write_seeds=true; shift ;;
        --import-frames) import_frames="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")

tools="$(cache_dir "fuzz/cargo-fuzz-$CARGO_FUZZ_VERSION")"
if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
    nice -n 15 cargo install --locked --quiet --root "$tools" "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi
export PATH="$tools/bin:$PATH"
# Never the workspace's CARGO_TARGET_DIR: instrumented builds share nothing with it.
target_dir="${KAFSCALE_FUZZ_TARGET_DIR:-$(cache_dir fuzz/target)}"
unset CARGO_TARGET_DIR

# Release with debug assertions and overflow checks (cargo-fuzz's default), 16 codegen units
# (a cold build of the whole dependency graph is minutes shorter than with 1, at a small cost
# in executions per second).
started=$SECONDS
(
    cd fuzz
    nice -n 15 cargo fuzz build -s none --codegen-units 16 --target-dir "$target_dir"
)
# cargo-fuzz has no --locked: the lock file must not have moved.
if ! git diff --quiet -- fuzz/Cargo.lock; then
    echo "fuzz.sh: the build changed fuzz/Cargo.lock (commit the update)" >&2
    git --no-pager diff --stat -- fuzz/Cargo.lock >&2
    exit 1
fi
echo "fuzz.sh: built in $((SECONDS - started)) s"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"

if $write_seeds; then
    "$bin_dir/write_seeds" fuzz/corpus
    exit 0
fi
if [[ -n "$import_frames" ]]; then
    "$bin_dir/import_frames" "$import_frames" fuzz/corpus
    exit 0
fi
$build_only && exit 0

summary=()
for target in "${targets[@]}"; do
    bin="$bin_dir/$target"
    [[ -x "$bin" ]] || { echo "fuzz.sh: no target $target" >&2; exit 2; }
    scratch="$(mktemp -d)"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$artifacts"
    log="$scratch/log"
    echo "---------- $target: ${seconds}s ----------"
    status=0
    # New inputs go to the scratch folder (the first); the checked-in corpus is only read.
    nice -n 15 "$bin" "$scratch" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -malloc_limit_mb=1024 \
        -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)"
    summary+=("$(printf '%-14s %10s execs %8s/s  %s' "$target" "${execs:-?}" "${rate:-?}" "$cov")")
    if [[ $status -ne 0 ]]; then
        tail -n 60 "$log"
        crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        echo
        echo "fuzz.sh: $target FAILED (exit $status); input: ${crash:-none written}" >&2
        if [[ -n "$crash" ]]; then
            echo "fuzz.sh: replay with: $bin $crash" >&2
        fi
        rm -rf "$scratch"
        exit 1
    fi
    rm -rf "$scratch"
done
echo
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
printf '%s\n' "${summary[@]}"
