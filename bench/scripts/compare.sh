#!/usr/bin/env bash
# Runs the same workloads against chorusd, NATS, Redis and Mosquitto on this machine, one broker
# at a time on a loopback port, with the same load generator (chorus-bench), and writes one JSON
# result per run plus a Markdown summary.
#
# Workloads (each on a freshly started broker, stopped by PID afterwards):
#   fanout-max   1 topic, 100 subscribers, 1 publisher as fast as the broker's replies allow
#                (window of 1,000 unconfirmed publishes), 10 s, then up to 20 s to deliver
#   fanout-lag   the same, but the publisher also waits while deliveries lag by more than
#                1,000 messages per subscriber: the fan-out rate sustained with a bounded backlog
#   fanout-rate  1 topic, 100 subscribers, 1 publisher at 5,000 messages/s, 10 s
#   idle         10,000 subscribed idle connections, memory per connection
# Mosquitto runs the fanout workloads at MQTT QoS 0 and QoS 1.
#
# Usage: bench/scripts/compare.sh [--out DIR] [--brokers "chorus nats redis mosquitto"]
#            [--workloads "fanout-max fanout-lag fanout-rate idle"] [--rounds N]
#            [--duration SECS] [--subscribers N] [--rate PER_SEC] [--idle N]
#            [--no-install] [--no-build]
# With --rounds N above 1, every broker runs every workload once per round, in turn, and the
# result files end in -rROUND.
# Needs root for apt-get unless --no-install is given and the brokers are installed.

set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"
out="$repo/bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ)"
brokers="chorus nats redis mosquitto"
workloads="fanout-max fanout-lag fanout-rate idle"
rounds=1
duration=10
subscribers=100
rate=5000
idle=10000
install=1
build=1

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --brokers) brokers=$2; shift 2 ;;
        --workloads) workloads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --subscribers) subscribers=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        --no-install) install=0; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

# Loopback ports, one per broker so that a broker that failed to stop cannot take another's.
declare -A port=([chorus]=17410 [nats]=17411 [redis]=17412 [mosquitto]=17413)
declare -A protocol=([chorus]=chorus [nats]=nats [redis]=redis [mosquitto]=mqtt)
work=$(mktemp -d /tmp/chorus-compare.XXXXXX)
# The binaries are copied here once built, so a rebuild in the work tree during the run cannot
# swap them between workloads.
bin="$work/bin"
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then stop_pid "$broker_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

install_brokers() {
    log "installing nats-server, redis-server and mosquitto from Debian"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || log "apt-get update failed; trying the install anyway"
    for package in nats-server redis-server mosquitto; do
        if ! timeout 300 apt-get install -y -qq "$package" >/dev/null; then
            log "package $package is unavailable; its broker is skipped"
        fi
    done
}

available() {
    case "$1" in
        chorus) [ -x "$bin/chorusd" ] ;;
        nats) command -v nats-server >/dev/null ;;
        redis) command -v redis-server >/dev/null ;;
        mosquitto) command -v mosquitto >/dev/null ;;
    esac
}

version_of() {
    case "$1" in
        chorus) "$bin/chorusd" --version ;;
        nats) nats-server --version ;;
        redis) redis-server --version | cut -d' ' -f1-3 ;;
        mosquitto) mosquitto -h 2>&1 | head -n 1 || true ;;
    esac
}

# Starts a broker with its data in a fresh directory and sets broker_pid.
start_broker() {
    local name=$1 run=$2
    local p=${port[$name]} dir="$work/$name-$run"
    mkdir -p "$dir"
    case "$name" in
        chorus)
            "$bin/chorusd" --listen "127.0.0.1:$p" --admin-listen 127.0.0.1:0 \
                --data-dir "$dir/data" --log warn >"$dir/broker.log" 2>&1 &
            ;;
        nats)
            # Core NATS only: JetStream (persistence) is off unless -js is given.
            nats-server -a 127.0.0.1 -p "$p" >"$dir/broker.log" 2>&1 &
            ;;
        redis)
            # Protected mode accepts only 127.0.0.1 and ::1 as client addresses, and the bench
            # connects from 127.0.0.2-251; the listener is still bound to 127.0.0.1 only.
            redis-server --bind 127.0.0.1 --port "$p" --protected-mode no --save '' \
                --appendonly no --dir "$dir" --maxclients 19000 >"$dir/broker.log" 2>&1 &
            ;;
        mosquitto)
            # TCP_NODELAY as chorusd, NATS and Redis set it by default; every other setting
            # keeps Mosquitto's default.
            cat >"$dir/mosquitto.conf" <<EOF
listener $p 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
EOF
            mosquitto -c "$dir/mosquitto.conf" >"$dir/broker.log" 2>&1 &
            ;;
    esac
    broker_pid=$!
    if ! wait_port "$p"; then
        log "$name did not listen on port $p within 10 s; see its log below"
        tail -n 20 "$dir/broker.log" >&2 || true
        stop_pid "$broker_pid"
        broker_pid=""
        return 1
    fi
}

stop_broker() {
    stop_pid "$broker_pid"
    broker_pid=""
}

# Runs one workload against a fresh broker; a failed check (exit 1) is recorded, not fatal.
run_one() {
    local name=$1 run=$2 extra=$3
    shift 3
    local file="$out/$name-$run.json" status=0
    start_broker "$name" "$run" || return 0
    log "$name: $run"
    timeout 600 "$bin/chorus-bench" "$@" --server "127.0.0.1:${port[$name]}" \
        --broker "${protocol[$name]}" --broker-pid "$broker_pid" $extra \
        --out "$file" >"$out/$name-$run.txt" 2>&1 || status=$?
    stop_broker
    if [ "$status" -gt 1 ]; then
        log "$name: $run could not run (exit $status); see $out/$name-$run.txt"
        rm -f "$file"
    fi
    sleep 2
}

# Returns whether the workload is among those selected.
selected() {
    [[ " $workloads " == *" $1 "* ]]
}

run_broker() {
    local name=$1 tag=$2
    local qos_levels=("")
    if [ "$name" = mosquitto ]; then qos_levels=("--mqtt-qos 0" "--mqtt-qos 1"); fi
    for qos in "${qos_levels[@]}"; do
        local suffix=""
        if [ -n "$qos" ]; then suffix="-qos${qos##* }"; fi
        if selected fanout-max; then
            run_one "$name" "fanout-max$suffix$tag" "$qos" fanout --subscribers "$subscribers" \
                --rate max --duration "$duration" --drain-timeout 20
        fi
        if selected fanout-lag; then
            run_one "$name" "fanout-lag$suffix$tag" "$qos" fanout --subscribers "$subscribers" \
                --rate max --max-lag 1000 --duration "$duration" --drain-timeout 10
        fi
        if selected fanout-rate; then
            run_one "$name" "fanout-rate$suffix$tag" "$qos" fanout --subscribers "$subscribers" \
                --rate "$rate" --duration "$duration" --drain-timeout 10
        fi
    done
    if selected idle; then
        run_one "$name" "idle$tag" "" idle --connections "$idle" --hold 5
    fi
}

record_machine() {
    {
        machine_record
        for name in $brokers; do
            if available "$name"; then echo "$name: $(version_of "$name")"; fi
        done
    } >"$out/machine.txt"
}

# One Markdown table per workload from the JSON results.
summarize() {
    local md="$out/summary.md"
    {
        echo "# Broker comparison"
        echo
        sed 's/^/    /' "$out/machine.txt"
        for kind in fanout-max fanout-lag fanout-rate; do
            echo
            echo "## $kind"
            echo
            echo "| run | published/s | delivered/s | deliver ms p50 / p95 / p99 / max | ack ms p50 / p99 | losses | duplicates | broker CPU s | broker CPU ns per delivery | broker peak RSS MiB |"
            echo "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
            for file in "$out"/*-"$kind"*.json; do
                [ -e "$file" ] || continue
                jq -r '[
                    (input_filename | split("/") | last | rtrimstr(".json")),
                    .published_per_sec, .delivered_per_sec,
                    "\(.publish_deliver_ms.p50) / \(.publish_deliver_ms.p95) / \(.publish_deliver_ms.p99) / \(.publish_deliver_ms.max)",
                    (if .publish_ack_ms == null then "none" else "\(.publish_ack_ms.p50) / \(.publish_ack_ms.p99)" end),
                    .losses, .duplicates,
                    (.broker_process.cpu_secs // "-"),
                    (if (.broker_process == null or .delivered == 0) then "-"
                     else (.broker_process.cpu_secs * 1e9 / .delivered | floor) end),
                    ((.broker_process.hwm_kib // 0) / 1024 | floor)
                  ] | "| " + (map(tostring) | join(" | ")) + " |"' "$file"
            done
        done
        echo
        echo "## idle"
        echo
        echo "| run | established | ramp s | RSS before MiB | RSS connected MiB | bytes per connection | after hold | kernel TCP KiB | pings answered |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for file in "$out"/*-idle*.json; do
            [ -e "$file" ] || continue
            jq -r '[
                (input_filename | split("/") | last | rtrimstr(".json")),
                .established, .ramp_secs,
                ((.broker_rss_before_kib // 0) / 1024 | floor),
                ((.broker_rss_connected_kib // 0) / 1024 | floor),
                .bytes_per_connection, .bytes_per_connection_held,
                .kernel_tcp_mem_kib, .pings_answered
              ] | "| " + (map(tostring) | join(" | ")) + " |"' "$file"
        done
    } >"$md"
    cat "$md"
}

main() {
    if [ "$install" = 1 ]; then install_brokers; fi
    if [ "$build" = 1 ]; then
        log "building chorusd and chorus-bench in release mode"
        (cd "$repo" && cargo build --release -p chorus-broker -p chorus-bench)
    fi
    mkdir -p "$bin"
    cp "$repo/target/release/chorusd" "$repo/target/release/chorus-bench" "$bin/"
    command -v jq >/dev/null || { log "jq is needed for the summary (apt-get install jq)"; exit 2; }
    mkdir -p "$out"
    record_machine
    for round in $(seq "$rounds"); do
        local tag=""
        if [ "$rounds" -gt 1 ]; then tag="-r$round"; fi
        for name in $brokers; do
            if ! available "$name"; then
                log "$name is not installed; skipped"
                continue
            fi
            run_broker "$name" "$tag"
        done
    done
    summarize
    log "results in $out"
}

main
