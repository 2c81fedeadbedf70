#!/usr/bin/env bash
# Measures zstd on a relay link with a recorded chat: an origin and one relay below it, the chat
# replayed through the relay (its publishes go up to the origin, the comments come back down
# the link) to S subscribers at the relay. It runs once per zstd level given, each time with a
# fresh origin and relay; level 0 is the plain link. For each run it reports the origin's and
# the relay's CPU seconds (from /proc/PID/stat), and the bytes on the link (from the relay's
# /v1/tree): plain EVENTS frames, EVENTS_ZSTD frames with the bytes they decompressed into and
# their ratio, and the sum of both kinds.
#
# Usage: bench/scripts/relay-compression.sh --log FILE [--levels "0 1 3"] [--subscribers S]
#                                           [--speed X] [--batch-window-us US] [--out DIR]
#                                           [--no-build]

set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"

chat_log=""
levels="0 1 3"
subscribers=100
speed=200
window=0
out="$repo/bench/results/relay-compression-$(date -u +%Y%m%dT%H%M%SZ)"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --log) chat_log=$2; shift 2 ;;
        --levels) levels=$2; shift 2 ;;
        --subscribers) subscribers=$2; shift 2 ;;
        --speed) speed=$2; shift 2 ;;
        --batch-window-us) window=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done
if [ -z "$chat_log" ] || [ ! -r "$chat_log" ]; then
    log "skipped: no readable chat log; pass one with --log FILE"
    exit 0
fi

origin_port=17450
origin_admin=17451
relay_port=17452
relay_admin=17453
work=$(mktemp -d /tmp/chorus-relay-compression.XXXXXX)
origin_pid=""
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then stop_pid "$relay_pid"; fi
    if [ -n "$origin_pid" ]; then stop_pid "$origin_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$build" = 1 ]; then
    cargo build --release -p chorus-broker -p chorus-bench --manifest-path "$repo/Cargo.toml"
fi
bin="$repo/target/release"
mkdir -p "$out"

# Starts chorusd with the configuration file CONFIG, logging to LOG, and prints its PID.
start_node() {
    local config=$1 logfile=$2 port=$3
    "$bin/chorusd" --config "$config" --log warn >"$logfile" 2>&1 &
    local pid=$!
    if ! wait_port "$port"; then
        log "chorusd ($config) did not listen within 10 s:"; tail -n 20 "$logfile" >&2
        kill -KILL "$pid" 2>/dev/null || true
        exit 1
    fi
    echo "$pid"
}

run_once() {
    local level=$1 dir="$work/level-$1"
    mkdir -p "$dir"
    cat >"$dir/origin.toml" <<EOF
data_dir = "$dir/origin-data"
listen = ["127.0.0.1:$origin_port"]
[admin]
listen = "127.0.0.1:$origin_admin"
[delivery]
batch_window_us = $window
[compression]
zstd_level = $level
EOF
    cat >"$dir/relay.toml" <<EOF
role = "relay"
data_dir = "$dir/relay-data"
listen = ["127.0.0.1:$relay_port"]
[admin]
listen = "127.0.0.1:$relay_admin"
[relay]
upstreams = ["127.0.0.1:$origin_port"]
compression = true
EOF
    origin_pid=$(start_node "$dir/origin.toml" "$dir/origin.log" "$origin_port")
    relay_pid=$(start_node "$dir/relay.toml" "$dir/relay.log" "$relay_port")
    local o0 r0 o1 r1
    o0=$(cpu_ticks "$origin_pid")
    r0=$(cpu_ticks "$relay_pid")
    "$bin/chorus-bench" replay --server "127.0.0.1:$relay_port" --log "$chat_log" \
        --speed "$speed" --subscribers "$subscribers" --json --out "$out/replay-$level.json" \
        >"$out/replay-$level.txt" 2>&1
    o1=$(cpu_ticks "$origin_pid")
    r1=$(cpu_ticks "$relay_pid")
    curl -sf "http://127.0.0.1:$relay_admin/v1/tree" >"$out/tree-$level.json"
    stop_pid "$relay_pid"; relay_pid=""
    stop_pid "$origin_pid"; origin_pid=""
    local tck delivered zin zout
    tck=$(getconf CLK_TCK)
    delivered=$(sed -n 's/^delivered *\([0-9]*\).*/\1/p' "$out/replay-$level.txt")
    zin=$(grep -o '"zstd_bytes_received": *[0-9]*' "$out/tree-$level.json" | grep -o '[0-9]*$')
    zout=$(grep -o '"zstd_bytes_decompressed": *[0-9]*' "$out/tree-$level.json" | grep -o '[0-9]*$')
    plain=$(grep -o '"events_bytes_received": *[0-9]*' "$out/tree-$level.json" | grep -o '[0-9]*$')
    read -r ou0 os0 <<<"$o0"
    read -r ou1 os1 <<<"$o1"
    read -r ru0 rs0 <<<"$r0"
    read -r ru1 rs1 <<<"$r1"
    awk -v l="$level" -v d="$delivered" -v t="$tck" \
        -v ou=$((ou1 - ou0)) -v os=$((os1 - os0)) -v ru=$((ru1 - ru0)) -v rs=$((rs1 - rs0)) \
        -v zin="${zin:-0}" -v zout="${zout:-0}" -v plain="${plain:-0}" \
        -v lat="$(grep 'publish->deliver' "$out/replay-$level.txt")" \
        'BEGIN {
            ratio = zin > 0 ? sprintf("%.2f", zout / zin) : "-"
            split(lat, f, " +")
            printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %d | %d | %d | %s | %d | %s | %s |\n",
                l, d, ou / t, os / t, ru / t, rs / t, plain, zin, zout, ratio,
                plain + zin, f[3], f[5]
        }' >>"$out/table.md"
}

{
    machine_record
    echo "command: bench/scripts/relay-compression.sh --levels \"$levels\" --subscribers $subscribers --speed $speed --batch-window-us $window"
    echo
    echo "| zstd level | deliveries | origin user s | origin system s | relay user s | relay system s | plain EVENTS bytes | EVENTS_ZSTD bytes | decompressed bytes | ratio | link bytes | p50 ms | p99 ms |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$out/table.md"
for level in $levels; do
    run_once "$level"
done
cat "$out/table.md"
