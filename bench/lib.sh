# Shared by the benchmarks: messages, timing, the outpost binary and the work dir.
# Source it after setting `name` (the script's name, for messages) and `root` (the repository).

die() { echo "$name: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a + 0 < b + 0) ? a : b }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a + 0 > b + 0) ? a : b }'; }
# The median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

if ! /usr/bin/time -f %M true >/dev/null 2>&1; then
    die "GNU time is required at /usr/bin/time to measure peak RSS; install it with: apt-get install -y time"
fi

# Keep the user's and the system's git configuration out of both the build and the timings
# (fetch.fsckObjects, commit.gpgsign, gc.auto ... would change what is measured).
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export LC_ALL=C

# find_outpost ALONE: sets $outpost to an absolute path of the binary to time ($OUTPOST, or
# target/release/outpost, built unless NO_BUILD=1); ALONE names what SKIP_OUTPOST=1 times.
find_outpost() {
    outpost=""
    [[ ${SKIP_OUTPOST:-0} == 1 ]] && return
    if [[ -n ${OUTPOST:-} ]]; then
        outpost=$OUTPOST
    else
        outpost="$root/target/release/outpost"
        if [[ ${NO_BUILD:-0} != 1 ]]; then
            log "cargo build --release --locked"
            (cd "$root" && cargo build --release --locked --quiet) ||
                die "cargo build failed (set SKIP_OUTPOST=1 to time $1 alone)"
        fi
    fi
    [[ -x $outpost ]] || die "no outpost binary at $outpost (build it, set OUTPOST=..., or SKIP_OUTPOST=1)"
    outpost=$(cd "$(dirname "$outpost")" && pwd)/$(basename "$outpost")
}

# work_dir [DIR]: sets $work to DIR (created), or to a new temp dir.
work_dir() {
    if [[ $# -ge 1 ]]; then
        mkdir -p "$1"
        work=$(cd "$1" && pwd)
    else
        work=$(mktemp -d /tmp/outpost-bench.XXXXXX)
    fi
}

# timed LABEL CMD... : runs CMD under GNU time, after a `sync` when TIMED_SYNC=1 (so earlier
# writes are not flushed inside the timing); sets $wall (seconds) and $rss (KiB). Its output
# goes to $run/LABEL.out/.err; a failure prints them and stops the benchmark.
timed() {
    local label=$1
    shift
    local t0 t1 status=0
    [[ ${TIMED_SYNC:-0} == 1 ]] && sync
    t0=$(now_ns)
    /usr/bin/time -o "$run/$label.time" -f %M "$@" >"$run/$label.out" 2>"$run/$label.err" || status=$?
    t1=$(now_ns)
    if [[ $status -ne 0 ]]; then
        echo "$name: $label failed (exit $status): $*" >&2
        sed 's/^/    /' "$run/$label.out" "$run/$label.err" >&2
        exit 1
    fi
    wall=$(secs "$t0" "$t1")
    rss=$(tail -n 1 "$run/$label.time")
}
