#!/usr/bin/env bash
# Measures what TLS costs chorusd. It replays a recorded chat to S subscribers over plain TCP and
# then over TLS, against a fresh chorusd each time. For both it reports chorusd's user and system
# CPU seconds (from /proc/PID/stat) and the deliveries per CPU-second.
#
# The certificate authority and the server certificate are made with openssl at each run.
#
# Usage: bench/scripts/tls-cost.sh --log FILE [--subscribers S] [--speed X] [--runs N]
#                                   [--out DIR] [--no-build]

set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"

chat_log=""
subscribers=1000
speed=200
runs=2
out="$repo/bench/results/tls-cost-$(date -u +%Y%m%dT%H%M%SZ)"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --log) chat_log=$2; shift 2 ;;
        --subscribers) subscribers=$2; shift 2 ;;
        --speed) speed=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
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

port=17440
tls_port=17441
admin_port=17442
work=$(mktemp -d /tmp/chorus-tls-cost.XXXXXX)
chorusd_pid=""
cleanup() {
    if [ -n "$chorusd_pid" ]; then stop_pid "$chorusd_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ "$build" = 1 ]; then
    cargo build --release -p chorus-broker -p chorus-bench --manifest-path "$repo/Cargo.toml"
fi
bin="$repo/target/release"
mkdir -p "$out"

# A throwaway certificate authority and a certificate for localhost and 127.0.0.1.
pki="$work/pki"
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=chorus bench CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$pki/san.cnf"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$pki/san.cnf" -out "$pki/server.crt" 2>/dev/null

# Runs one replay in MODE (plain or tls) against a fresh chorusd; appends a line to the table.
run_once() {
    local mode=$1 run=$2 dir="$work/$1-$2"
    mkdir -p "$dir"
    cat >"$dir/chorusd.toml" <<EOF
data_dir = "$dir/data"
listen = ["127.0.0.1:$port"]
[admin]
listen = "127.0.0.1:$admin_port"
[tls]
listen = ["127.0.0.1:$tls_port"]
cert_file = "$pki/server.crt"
key_file = "$pki/server.key"
EOF
    "$bin/chorusd" --config "$dir/chorusd.toml" --log warn >"$dir/chorusd.log" 2>&1 &
    chorusd_pid=$!
    if ! wait_port "$tls_port"; then
        log "chorusd did not listen within 10 s:"; tail -n 20 "$dir/chorusd.log" >&2
        exit 1
    fi
    local flags=(--server "127.0.0.1:$port")
    if [ "$mode" = tls ]; then
        flags=(--server "127.0.0.1:$tls_port" --tls --ca "$pki/ca.crt" --server-name localhost)
    fi
    local before after
    before=$(cpu_ticks "$chorusd_pid")
    "$bin/chorus-bench" replay "${flags[@]}" --log "$chat_log" --speed "$speed" \
        --subscribers "$subscribers" --json --out "$out/replay-$mode-$run.json" \
        >"$out/replay-$mode-$run.txt" 2>&1
    after=$(cpu_ticks "$chorusd_pid")
    stop_pid "$chorusd_pid"
    chorusd_pid=""
    local tck delivered
    tck=$(getconf CLK_TCK)
    delivered=$(sed -n 's/^delivered *\([0-9]*\).*/\1/p' "$out/replay-$mode-$run.txt")
    read -r u0 s0 <<<"$before"
    read -r u1 s1 <<<"$after"
    awk -v m="$mode" -v r="$run" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$tck" \
        -v d="$delivered" -v lat="$(grep 'publish->deliver' "$out/replay-$mode-$run.txt")" \
        'BEGIN {
            cpu = (u + s) / t
            split(lat, f, " +")
            printf "| %s | %d | %d | %.2f | %.2f | %.2f | %.2f M | %s | %s |\n",
                m, r, d, u / t, s / t, cpu, d / cpu / 1e6, f[3], f[5]
        }' >>"$out/table.md"
}

{
    machine_record
    echo "command: bench/scripts/tls-cost.sh --subscribers $subscribers --speed $speed --runs $runs"
    echo
    echo "| transport | run | deliveries | user s | system s | broker CPU s | deliveries per CPU-s | p50 ms | p99 ms |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$out/table.md"
for run in $(seq "$runs"); do
    run_once plain "$run"
    run_once tls "$run"
done
cat "$out/table.md"
