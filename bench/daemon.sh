#!/usr/bin/env bash
# Benchmark: the idle daemon, and a dropped bundle to an applied host.
#
#   bench/daemon.sh [WORKDIR]
#
# 1. Idle cost: a daemon with a deployed commit of FILES files, with apply.interval set to
#    CYCLE so that SECONDS of running make many cycles (the default, 0.25 s for 60 s, is 240
#    reconciles: two and a half days of the default 15-minute interval). Reports the RSS at the
#    end and its peak (goal <= 10 MB), and the wakeups per minute of an idle daemon with the
#    default timers, counted as context switches over IDLE seconds (goal: only the timers).
# 2. Latency: a 1 MB bundle moved into the spool with its .sig, to the host applied (median of
#    RUNS; goal <= 1 s).
#
# Environment: FILES=200 CYCLE=250ms SECONDS_RUN=60 IDLE=60 RUNS=5 OUTPOST=path NO_BUILD=1
set -euo pipefail

FILES=${FILES:-200}
CYCLE=${CYCLE:-250ms}
SECONDS_RUN=${SECONDS_RUN:-60}
IDLE=${IDLE:-60}
RUNS=${RUNS:-5}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
name=daemon.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
for tool in git ssh-keygen python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
find_outpost daemon
[[ -n $outpost ]] || die "nothing to time without outpost"
work_dir "$@"

# ---- a publisher repository and a host that trusts it ---------------------------------------
pub="$work/publisher"
rm -rf "$pub" "$work/host"
mkdir -p "$pub/keys" "$work/host"
ssh-keygen -q -t ed25519 -N "" -C fleet@example.com -f "$pub/keys/fleet"
printf 'fleet@example.com namespaces="git,outpost-bundle" %s\n' \
    "$(cut -d' ' -f1,2 "$pub/keys/fleet.pub")" >"$work/allowed_signers"
git init -q -b main "$pub/repo"
export GIT_AUTHOR_NAME=Fleet GIT_AUTHOR_EMAIL=fleet@example.com
export GIT_COMMITTER_NAME=Fleet GIT_COMMITTER_EMAIL=fleet@example.com
mkdir -p "$pub/repo/files"
{
    echo '[[tree]]'
    echo 'path = "/opt/app"'
    echo 'source = "files"'
} >"$pub/repo/outpost.toml"
for i in $(seq "$FILES"); do printf 'file %s\n' "$i" >"$pub/repo/files/f$i.txt"; done
commit() {
    git -C "$pub/repo" add -A
    git -C "$pub/repo" -c gpg.format=ssh -c user.signingkey="$pub/keys/fleet" \
        commit -q -S --allow-empty -m "$1"
}
bundle() { # bundle NAME [REVS]: a signed bundle of main (or REVS) in $pub
    git -C "$pub/repo" bundle create -q "$pub/$1" "${2:-main}"
    ssh-keygen -q -Y sign -f "$pub/keys/fleet" -n outpost-bundle "$pub/$1"
}
commit "initial state"
bundle base.bundle

config() { # config INTERVAL
    cat >"$work/config.toml" <<EOF
[host]
name = "bench-host"
root = "host"

[state]
dir = "state"

[apply]
interval = "$1"
set_owner = false
allowed_paths = ["/opt"]

[trust]
allowed_signers = "allowed_signers"
EOF
}

# start_daemon: runs the daemon in the background; $daemon_pid
start_daemon() {
    "$outpost" --config "$work/config.toml" daemon 2>"$work/daemon.log" &
    daemon_pid=$!
    sleep 1
}
stop_daemon() {
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || true
}
rss_kib() { awk -v k="$2" '$1 == k ":" { print $2 }' "/proc/$1/status"; }
switches() {
    awk '$1 == "voluntary_ctxt_switches:" || $1 == "nonvoluntary_ctxt_switches:" { s += $2 } END { print s }' \
        "/proc/$1/status"
}

rm -rf "$work/state"
config "$CYCLE"
"$outpost" --config "$work/config.toml" import "$pub/base.bundle" >/dev/null
"$outpost" --config "$work/config.toml" apply >/dev/null

# ---- 1. many cycles, then the memory -----------------------------------------------------------
log "daemon with apply.interval = $CYCLE for $SECONDS_RUN s"
start_daemon
sleep "$SECONDS_RUN"
rss_end=$(rss_kib "$daemon_pid" VmRSS)
rss_peak=$(rss_kib "$daemon_pid" VmHWM)
cycles=$(grep -c "" "$work/daemon.log" || true)
stop_daemon

log "idle daemon with the default timers for $IDLE s"
config "15m"
start_daemon
s0=$(switches "$daemon_pid")
sleep "$IDLE"
s1=$(switches "$daemon_pid")
idle_rss=$(rss_kib "$daemon_pid" VmRSS)
stop_daemon
wakeups=$(awk -v a="$s0" -v b="$s1" -v t="$IDLE" 'BEGIN { printf "%.1f", (b - a) * 60 / t }')

# ---- 2. latency: spool drop to applied ---------------------------------------------------------
log "spool drop of a 1 MB bundle to the host applied ($RUNS runs)"
start_daemon
spool="$work/state/inbox"
lat=()
for i in $(seq "$RUNS"); do
    head -c 1000000 /dev/urandom | base64 >"$pub/repo/files/blob.txt"
    printf 'run %s\n' "$i" >"$pub/repo/files/marker.txt"
    commit "run $i"
    bundle "run$i.bundle" main~1..main
    t0=$(now_ns)
    mv "$pub/run$i.bundle" "$spool/"
    mv "$pub/run$i.bundle.sig" "$spool/"
    until [[ $(cat "$work/host/opt/app/marker.txt" 2>/dev/null) == "run $i" ]]; do sleep 0.01; done
    t1=$(now_ns)
    lat+=("$(secs "$t0" "$t1")")
    echo "   run $i: $(secs "$t0" "$t1") s (bundle $(mb "$(stat -c %s "$spool/../done/"*"-run$i.bundle" 2>/dev/null || echo 0)"))" >&2
done
stop_daemon

echo
echo "outpost daemon benchmark  ($FILES managed files)"
printf '  %-44s %s KiB (peak %s KiB)   goal <= 10240\n' "RSS after $SECONDS_RUN s of $CYCLE cycles" "$rss_end" "$rss_peak"
printf '  %-44s %s\n' "log lines written in that time" "$cycles"
printf '  %-44s %s KiB\n' "RSS idle, default timers" "$idle_rss"
printf '  %-44s %s   (timers: a spool rescan a minute, the reconcile every 15)\n' "wakeups per minute, idle" "$wakeups"
printf '  %-44s %s s   goal <= 1\n' "1 MB spool bundle to applied, median" "$(median "${lat[@]}")"
