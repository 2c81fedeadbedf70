#!/usr/bin/env bash
# Runs the chorus-only scenarios against a fresh chorusd each (loopback port, data in a temporary
# directory, stopped by PID) and keeps one JSON and one text result per run:
#   idle    100,000 idle subscribed connections requested, held 35 s so that chorusd pings
#           every one of them (it pings after half its 60 s idle timeout)
#   topics  100 topics, 1,000 subscribers spread over them, 4 publishers, 10,000 messages/s
#   spike   100 subscribers, 1,000 messages/s for 10 s, 10,000/s for 10 s, 1,000/s for 10 s
#   slow    50 fast and 5 slow subscribers at 5,000 messages/s; also saves chorusd's metrics
#
# Usage: bench/scripts/scenarios.sh [--out DIR] [--only "idle topics spike slow"] [--no-build]

set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"

out="$repo/bench/results/scenarios-$(date -u +%Y%m%dT%H%M%SZ)"
only="idle topics spike slow"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

port=17420
admin_port=17421
work=$(mktemp -d /tmp/chorus-scenarios.XXXXXX)
bin="$work/bin"
chorusd_pid=""
cleanup() {
    if [ -n "$chorusd_pid" ]; then stop_pid "$chorusd_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Runs one scenario on a fresh chorusd; a failed check (exit 1) is recorded, not fatal.
run_one() {
    local name=$1
    shift
    local status=0
    start_chorusd "$bin" "$port" "$admin_port" "$work/$name" || return 0
    log "$name"
    timeout 600 "$bin/chorus-bench" "$name" "$@" --server "127.0.0.1:$port" \
        --broker-pid "$chorusd_pid" --out "$out/$name.json" >"$out/$name.txt" 2>&1 || status=$?
    curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics" >"$out/$name-metrics.txt" || true
    stop_pid "$chorusd_pid"
    chorusd_pid=""
    if [ "$status" -gt 1 ]; then log "$name could not run (exit $status); see $out/$name.txt"; fi
    cat "$out/$name.txt"
    sleep 2
}

if [ "$build" = 1 ]; then
    (cd "$repo" && cargo build --release -p chorus-broker -p chorus-bench)
fi
mkdir -p "$out" "$bin"
cp "$repo/target/release/chorusd" "$repo/target/release/chorus-bench" "$bin/"
machine_record >"$out/machine.txt"
for name in $only; do
    case "$name" in
        idle) run_one idle --connections 100000 --hold 35 ;;
        topics) run_one topics --topics 100 --subscribers 1000 --publishers 4 --rate 10000 \
            --duration 10 ;;
        spike) run_one spike --subscribers 100 --rate 1000 --factor 10 --before 10 \
            --spike-secs 10 --after 10 ;;
        slow) run_one slow --subscribers 50 --slow 5 --rate 5000 --phase-secs 10 ;;
        *) log "unknown scenario $name; skipped" ;;
    esac
done
log "results in $out"
