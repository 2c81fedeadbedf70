# Helpers shared by the benchmark scripts: starting chorusd on a loopback port with its data in
# a temporary directory, and stopping processes by PID. Source it; it defines functions only.

log() { echo "${0##*/}: $*" >&2; }

# Stops one process this script started: SIGTERM, up to 5 s for it to exit, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "PID $pid ignored SIGTERM for 5 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Waits up to 10 s for a listener on 127.0.0.1:PORT; the probe connection closes at once.
wait_port() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Starts BIN/chorusd on 127.0.0.1:PORT with its data in DIR and the admin endpoint on
# 127.0.0.1:ADMIN_PORT, and sets chorusd_pid. Returns 1 when it does not listen within 10 s.
start_chorusd() {
    local bin=$1 port=$2 admin_port=$3 dir=$4
    mkdir -p "$dir"
    "$bin/chorusd" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
        --data-dir "$dir/data" --log warn >"$dir/chorusd.log" 2>&1 &
    chorusd_pid=$!
    if ! wait_port "$port"; then
        log "chorusd did not listen on port $port within 10 s:"
        tail -n 20 "$dir/chorusd.log" >&2 || true
        stop_pid "$chorusd_pid"
        return 1
    fi
}

# Prints the user and system clock ticks that PID has used so far.
cpu_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# Prints the machine and the moment, for the record of a run.
machine_record() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores: $(nproc)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
    echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
    echo "kernel: $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "open-file limit (soft/hard): $(ulimit -Sn)/$(ulimit -Hn)"
}
