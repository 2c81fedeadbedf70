#!/usr/bin/env bash
# Builds the chorus Debian package and tests it: lintian, its contents, its maintainer scripts
# and the man pages. It then unpacks the package into a scratch directory, without installing
# it on this machine, and runs a real publish and tail between the unpacked chorusd and chorusctl.
#
# Installs what it needs first (Debian packages with apt-get, which needs root; cargo-deb with
# cargo install). Run from anywhere: packaging/test-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
TOPIC=packaging/smoke
TEXT="hello from the package"

step() { printf '\n==> %s\n' "$*"; }
fail() {
    printf 'test-deb: %s\n' "$*" >&2
    exit 1
}

scratch=$(mktemp -d)
chorusd_pid=
cleanup() {
    if [[ -n "$chorusd_pid" ]] && kill -0 "$chorusd_pid" 2> /dev/null; then
        kill -KILL "$chorusd_pid" 2> /dev/null || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

# Waits until "$@" succeeds, polling every 0.1 s, for at most $1 seconds.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

install_tools() {
    local missing=()
    command -v lintian > /dev/null || missing+=(lintian)
    command -v dpkg-parsechangelog > /dev/null || missing+=(dpkg-dev)
    command -v groff > /dev/null || missing+=(groff-base)
    command -v man > /dev/null || missing+=(man-db)
    if ((${#missing[@]} > 0)); then
        [[ $(id -u) -eq 0 ]] || fail "missing ${missing[*]}; install them or run as root"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if [[ "$(cargo deb --version 2> /dev/null || true)" != *"$CARGO_DEB_VERSION"* ]]; then
        cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
    fi
}

check_man_pages() {
    local page output
    for page in man/chorusd.8 man/chorusctl.1 man/chorusd.toml.5; do
        output=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
            man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 > /dev/null)
        [[ -z "$output" ]] || fail "man reports problems in $page:"$'\n'"$output"
        output=$(groff -man -ww -z "$page" 2>&1)
        [[ -z "$output" ]] || fail "groff reports problems in $page:"$'\n'"$output"
        echo "$page renders without warnings"
    done
    cargo run -q --locked -p chorus-man -- --out-dir man --check
}

# Builds the package into target/debian/ and sets $deb and $ddeb (the debug symbols package)
# to the paths that cargo deb prints on standard output.
build_deb() {
    local printed
    printed=$(cargo deb -p chorus-broker --locked --output target/debian/)
    printf '%s\n' "$printed"
    deb=$(grep '\.deb$' <<< "$printed" | tail -n1)
    ddeb=$(grep '\.ddeb$' <<< "$printed" | tail -n1 || true)
    [[ -f "$deb" ]] || fail "cargo deb printed no .deb path"
    [[ -f "$ddeb" ]] || fail "cargo deb printed no .ddeb path for the debug symbols"
}

run_lintian() {
    local output
    # --fail-on error: warnings and notes are listed but do not fail the test. The dbgsym
    # package is left out: like Debian's own dbgsym packages it has no copyright or changelog,
    # which lintian reports as errors.
    output=$(lintian --fail-on error --display-info "$deb" 2>&1) || {
        printf '%s\n' "$output"
        fail "lintian reports errors in $deb"
    }
    output=$(grep -v 'running with root privileges' <<< "$output" || true)
    echo "lintian $(basename "$deb"): ${output:-no tags}"
}

check_contents() {
    local listing path count
    listing=$(dpkg-deb -c "$deb")
    for path in \
        ./usr/bin/chorusd \
        ./usr/bin/chorusctl \
        ./etc/chorus/chorusd.toml \
        ./usr/lib/systemd/system/chorusd.service \
        ./usr/lib/sysctl.d/60-chorus.conf \
        ./usr/share/man/man8/chorusd.8.gz \
        ./usr/share/man/man1/chorusctl.1.gz \
        ./usr/share/man/man5/chorusd.toml.5.gz \
        ./usr/share/doc/chorus/copyright \
        ./usr/share/doc/chorus/changelog.Debian.gz; do
        grep -qE " $path\$" <<< "$listing" || fail "package lacks $path"
        echo "contains $path"
    done
    # One debug file for each of chorusd and chorusctl, named by build id.
    count=$(dpkg-deb -c "$ddeb" | grep -cE ' \./usr/lib/debug/\.build-id/.*\.debug$' || true)
    [[ "$count" -eq 2 ]] || fail "$(basename "$ddeb") has $count debug files, expected 2"
    echo "$(basename "$ddeb") contains 2 debug files"
}

check_control() {
    local control="$scratch/control" deb_version changelog_version
    dpkg-deb -e "$deb" "$control"
    grep -qx /etc/chorus/chorusd.toml "$control/conffiles" ||
        fail "/etc/chorus/chorusd.toml is not a conffile"
    echo "conffiles: $(tr '\n' ' ' < "$control/conffiles")"
    grep -q 'adduser --system --group' "$control/postinst" || fail "postinst creates no user"
    grep -q 'deb-systemd-helper' "$control/postinst" || fail "postinst has no systemd steps"
    grep -q '#DEBHELPER#' "$control/postinst" "$control/postrm" &&
        fail "a maintainer script still has its DEBHELPER placeholder"
    sh -n "$control/postinst"
    sh -n "$control/postrm"
    [[ ! -e "$control/prerm" ]] || sh -n "$control/prerm"
    echo "maintainer scripts: $(cd "$control" && ls -- *inst *rm 2> /dev/null | tr '\n' ' ')"

    deb_version=$(dpkg-deb -f "$deb" Version)
    changelog_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
    [[ "$deb_version" == "$changelog_version" ]] ||
        fail "package version is $deb_version but packaging/debian/changelog has $changelog_version"
    echo "version $deb_version, depends: $(dpkg-deb -f "$deb" Depends)"
}

verify_unit() {
    local unit="$scratch/unit/chorusd.service" output
    if ! command -v systemd-analyze > /dev/null; then
        echo "skipped: systemd-analyze is not installed"
        return
    fi
    # systemd-analyze checks that ExecStart's binary and the Documentation= man pages exist, so
    # point it at the unpacked ones.
    mkdir -p "$scratch/unit"
    sed "s|^ExecStart=/usr/bin/chorusd|ExecStart=$root/usr/bin/chorusd|" \
        "$root/usr/lib/systemd/system/chorusd.service" > "$unit"
    output=$(MANPATH="$root/usr/share/man" systemd-analyze verify "$unit" 2>&1) || {
        printf '%s\n' "$output"
        fail "systemd-analyze verify failed"
    }
    [[ -z "$output" ]] || printf '%s\n' "$output"
    echo "systemd-analyze verify: unit is valid"
    systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure' || true
}

check_version() {
    local expected actual
    expected="chorusd $(dpkg-deb -f "$deb" Version | sed 's/-[^-]*$//')"
    actual=$("$root/usr/bin/chorusd" --version)
    [[ "$actual" == "$expected" ]] || fail "chorusd --version printed '$actual', expected '$expected'"
    echo "$actual"
}

# Succeeds once process $1 has exited. An exited child stays a zombie (state Z) until `wait`
# collects it, and `kill -0` still reaches a zombie, so this reads the state instead.
exited() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2> /dev/null) || return 0
    [[ -z "$state" || "$state" == Z ]]
}

# Prints the address from chorusd's first log line "<target>: $1 addr=<address> ...".
logged_addr() {
    grep -m1 -o ": $1 addr=[^ ]*" "$scratch/chorusd.log" | sed 's/^.* addr=//'
}

start_chorusd() {
    "$root/usr/bin/chorusd" --config "$root/etc/chorus/chorusd.toml" \
        --data-dir "$scratch/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --workers 1 2> "$scratch/chorusd.log" &
    chorusd_pid=$!
    if ! wait_for 15 grep -q ': listening addr=' "$scratch/chorusd.log"; then
        cat "$scratch/chorusd.log" >&2
        fail "chorusd logged no listening address within 15 s"
    fi
    if ! wait_for 15 grep -q ': admin listening addr=' "$scratch/chorusd.log"; then
        cat "$scratch/chorusd.log" >&2
        fail "chorusd logged no admin endpoint address within 15 s"
    fi
    addr=$(logged_addr listening)
    admin_addr=$(logged_addr "admin listening")
    echo "chorusd (PID $chorusd_pid) listening on $addr, admin endpoint on $admin_addr"
}

publish_and_tail() {
    local published line
    published=$(timeout 20 "$root/usr/bin/chorusctl" --server "$addr" publish "$TOPIC" "$TEXT")
    echo "publish: $published"
    [[ "$published" == "published to $TOPIC at offset 0 "* ]] ||
        fail "publish printed '$published', expected offset 0"

    line=$(timeout 20 "$root/usr/bin/chorusctl" --server "$addr" tail "$TOPIC" --earliest --count 1)
    echo "tail: $line"
    [[ "$line" == "0  "* ]] || fail "tail printed '$line', expected offset 0 first"
    [[ "$line" == *"  $TEXT" ]] || fail "tail printed '$line', expected the text '$TEXT'"

    # The admin endpoint lists the topic that the publish created.
    line=$(timeout 20 "$root/usr/bin/chorusctl" --admin "$admin_addr" --json topics "$TOPIC")
    echo "topics: $line"
    [[ "$line" == *"\"$TOPIC\""* ]] || fail "topics printed '$line', expected the topic $TOPIC"
}

stop_chorusd() {
    local status=0
    kill -TERM "$chorusd_pid"
    if ! wait_for 30 exited "$chorusd_pid"; then
        fail "chorusd (PID $chorusd_pid) still runs 30 s after SIGTERM"
    fi
    wait "$chorusd_pid" || status=$?
    chorusd_pid=
    [[ $status -eq 0 ]] || fail "chorusd exited with status $status after SIGTERM"
    grep -q 'chorusd stopped' "$scratch/chorusd.log" || fail "chorusd logged no clean stop"
    echo "chorusd stopped with status 0"
}

step "installing tools"
install_tools
echo "$(lintian --version), $(cargo deb --version), $(groff --version | head -n1)"

step "checking man pages"
check_man_pages

step "building the package"
build_deb

step "running lintian"
run_lintian

step "checking the package contents"
check_contents

step "checking control files and maintainer scripts"
check_control

step "unpacking into a scratch root"
root="$scratch/root"
dpkg-deb -x "$deb" "$root"
echo "unpacked to $root"

step "verifying the systemd unit"
verify_unit

step "checking that chorusctl(1) covers the installed chorusctl's help"
CHORUSCTL="$root/usr/bin/chorusctl" cargo test -q --locked -p chorus-man --test man_pages \
    chorusctl_page_lists_every_command_and_flag

step "running the unpacked chorusd"
check_version
start_chorusd

step "publishing, tailing and listing topics with the unpacked chorusctl"
publish_and_tail

step "stopping chorusd"
stop_chorusd

step "Debian package tests passed"
