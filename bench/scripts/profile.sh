#!/usr/bin/env bash
# Profiles chorusd under the fanout scenario (1 topic, 100 subscribers) and writes text reports.
#
# With hardware counters (perf stat -e instructions works), `perf record -g` samples the default
# event. Without them, as in most virtual machines, it runs `valgrind --tool=callgrind` on a
# short fixed-rate run (user-space instructions only), and also samples with perf's cpu-clock
# software event when perf is installed, which includes time in the kernel.
#
# Usage: bench/scripts/profile.sh [--out DIR] [--no-build]

set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"

out="$repo/bench/results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

port=17430
admin_port=17431
work=$(mktemp -d /tmp/chorus-profile.XXXXXX)
bin="$work/bin"
chorusd_pid=""
sampler_pid=""
cleanup() {
    if [ -n "$sampler_pid" ]; then stop_pid "$sampler_pid"; fi
    if [ -n "$chorusd_pid" ]; then stop_pid "$chorusd_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT

fanout() {
    timeout 300 "$bin/chorus-bench" fanout --server "127.0.0.1:$port" --subscribers 100 "$@"
}

# Samples chorusd with `perf record -g EVENT...` during a 10 s closed-loop fanout at full speed.
perf_profile() {
    local name=$1
    shift
    start_chorusd "$bin" "$port" "$admin_port" "$work/$name" || return 1

    perf record "$@" -g -p "$chorusd_pid" -o "$work/$name.data" >"$work/$name.log" 2>&1 &
    sampler_pid=$!
    sleep 1
    fanout --rate max --max-lag 1000 --duration 10 --broker-pid "$chorusd_pid" \
        --out "$out/$name-run.json" >"$out/$name-run.txt" 2>&1 || true
    kill -INT "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
    stop_pid "$chorusd_pid"
    chorusd_pid=""

    {
        echo "# perf record $* -g -p <chorusd>, during:"
        echo "# chorus-bench fanout --subscribers 100 --rate max --max-lag 1000 --duration 10"
        echo
        echo "## by shared object"
        perf report -i "$work/$name.data" --no-children --stdio --sort dso 2>/dev/null |
            grep -E '^ +[0-9.]+%' | sed -n '1,6p'
        echo
        echo "## self time by symbol"
        perf report -i "$work/$name.data" --no-children --stdio --sort symbol 2>/dev/null |
            grep -E '^ +[0-9.]+%' | sed -n '1,25p' | sed 's/ *- *- *$//'
        echo
        echo "## inclusive time by symbol"
        perf report -i "$work/$name.data" --children --stdio --sort symbol -g none 2>/dev/null |
            grep -E '^ +[0-9.]+%' | sed -n '1,30p' | sed 's/ *- *- *$//'
    } >"$out/$name.txt"
    cat "$out/$name.txt"
}

# Runs chorusd under callgrind during a 5 s fanout at 1,000 messages/s.
callgrind_profile() {
    local dir="$work/callgrind"
    mkdir -p "$dir"
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$bin/chorusd" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
        --data-dir "$dir/data" --log warn >"$dir/valgrind.log" 2>&1 &
    chorusd_pid=$!
    # Under valgrind the start takes seconds rather than milliseconds.
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    fanout --rate 1000 --duration 5 --connect-timeout 30 --broker-pid "$chorusd_pid" \
        --out "$out/callgrind-run.json" >"$out/callgrind-run.txt" 2>&1 || true
    stop_pid "$chorusd_pid"
    chorusd_pid=""
    {
        echo "# valgrind --tool=callgrind chorusd, during:"
        echo "# chorus-bench fanout --subscribers 100 --rate 1000 --duration 5"
        echo "# Counts user-space instructions (Ir) only; time in the kernel is not seen."
        echo
        echo "## self"
        callgrind_annotate "$dir/callgrind.out" 2>/dev/null | sed -n '20,45p' | cut -c1-200
        echo
        echo "## inclusive"
        callgrind_annotate --inclusive=yes "$dir/callgrind.out" 2>/dev/null |
            sed -n '24,55p' | cut -c1-200
    } >"$out/callgrind.txt"
    cat "$out/callgrind.txt"
}

if [ "$build" = 1 ]; then
    (cd "$repo" && cargo build --release -p chorus-broker -p chorus-bench)
fi
mkdir -p "$out" "$bin"
cp "$repo/target/release/chorusd" "$repo/target/release/chorus-bench" "$bin/"
machine_record >"$out/machine.txt"

counters=""
if command -v perf >/dev/null; then counters=$(perf stat -e instructions true 2>&1 || true); fi
if grep -q '[0-9] *instructions' <<<"$counters"; then
    perf_profile perf-cycles
else
    log "no hardware counters here (perf stat -e instructions is not supported)"
    if command -v valgrind >/dev/null; then
        callgrind_profile
    else
        log "valgrind is not installed (apt-get install valgrind); no callgrind profile"
    fi
    if command -v perf >/dev/null; then
        perf_profile perf-cpu-clock -e cpu-clock -F 499
    fi
fi
log "results in $out"
