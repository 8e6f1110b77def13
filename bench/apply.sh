#!/usr/bin/env bash
# Benchmark: `outpost apply` of trees of 2,000 and 10,000 files versus rsync and CFEngine's
# cf-agent, first copy, no-op and drift repair.
#
#   bench/apply.sh [WORKDIR]
#
# For each number N in FILES, in one invocation: builds (once; cached in WORKDIR, keyed on the
# parameters) a repository holding outpost.toml and www/ (N text-like files of about SIZE bytes
# in ~N/100 directories, written by bench/gen-www.py), with an SSH-signed commit, bundles it
# and signs the bundle. The manifest deploys www/ as a tree at /srv/www. SRC below is the
# checkout of www/. Then, with a warm page cache, `sync` before every timed command, and the
# runs of rsync, cf-agent and outpost alternating (so that a busy machine weighs on all alike),
# RUNS runs of each command:
#
#   1. first copy, fresh destination each time:
#        rsync -a SRC/ DST/               into an empty directory
#        rsync -a --fsync SRC/ DST/       the same, with every file fsynced
#        cf-agent                         the policy below, into an empty directory (no fsync)
#        outpost apply                    fresh host root and state; the import before it is
#                                         not timed    goals: <= 1.0 x cf-agent,
#                                                             <= 1.0 x rsync --fsync
#   2. no-op, after the first copy (outpost: wait 1 s, one untimed apply that
#      hashes and records the stat cache, then the timed ones):
#        rsync -a  |  cf-agent  |  outpost apply                  goal: <= 0.3 x rsync
#   3. drift repair: the same 1% of the files (same size, new content, new mtime)
#      modified in each destination and in the host root before each run:
#        rsync -a --checksum  |  cf-agent  |  outpost apply       goal: <= 0.3 x rsync --checksum
#   4. peak RSS (GNU time %M, the largest over the runs) of every command; goal for outpost's
#      first apply from 10,000 files on: <= 16 MiB.
#
# It prints a report per size (median, min and max wall seconds, peak RSS, and the ratios of
# the medians against the goals, with the range of the per-run ratios as their noise), then a
# summary of every size against the goals. Ratios against cf-agent only when it ran.
#
# cf-agent (CFEngine Core; Debian's package cfengine3) runs when it is on PATH; this script
# installs nothing: `apt-get install -y cfengine3` gets it. Otherwise (or with SKIP_CF_AGENT=1)
# its side is skipped and the reports say so. Each size writes a standalone policy, RUN/copy.cf
# (RUN is WORKDIR/run), mode 0600 (cf-agent refuses a policy file others can write):
#     a files promise on DST with copy_from SRC (compare => "digest", preserve => "true" for
#     the mode and stealth => "true" for the times, as rsync -a keeps them, copy_backup =>
#     "false") and depth_search (depth => "inf"),
# and runs it as
#     cf-agent --no-lock --workdir RUN/cf-work --file RUN/copy.cf
# --no-lock, so that a run within a minute of the last is not skipped; --workdir, so that its
# state (LMDB locks and databases, promise_summary.log, logs, randseed) goes to RUN/cf-work
# and nothing to /var/lib/cfengine3. RUN/cf-work/bin/cf-promises links to cf-promises: before
# each run cf-agent validates the policy with it, and runs `ifconfig -a` to discover the host;
# both are in its times. It copies a file to FILE.cfnew and renames it, without fsync. It also
# logs to syslog through /dev/log, when there is one, as it changes files.
#
# Correctness: after outpost's first apply and after the last repair, `diff -r SRC host/srv/www`
# must be clean and `outpost plan` must exit 0 (the benchmark fails otherwise); the rsync and
# cf-agent destinations are checked with diff -r as well. cf-agent exits 0 even when it fails,
# so each of its runs must also print no error and leave no promise not repaired (its
# promise_summary.log); after each first copy its destination must hold as many files and
# directories as SRC, after each repair every drifted file must be SRC's again, and its no-op
# runs must repair nothing and leave every inode and ctime as they were.
#
# Environment:
#   FILES="2000 10000"         the trees, one run of the whole benchmark each: numbers of files
#   SIZE=2048                  average file size in bytes
#   RUNS=5                     timed runs of each command; the median is reported, with the
#                              smallest and the largest as its noise
#   OUTPOST=path               use this binary instead of building target/release/outpost
#   NO_BUILD=1                 do not run cargo; use target/release/outpost as it is
#   SKIP_OUTPOST=1             only build the repositories and time rsync (and cf-agent)
#   SKIP_CF_AGENT=1            do not time cf-agent even when it is installed
#   STRICT=1                   exit 1 when a goal is missed
#
# WORKDIR defaults to a new `mktemp -d` under /tmp; pass the same one again to reuse the
# generated repositories and bundles (one per size). Needs rsync >= 3.2.4 (for --fsync) and
# GNU time.
set -euo pipefail

FILES=${FILES:-2000 10000}
SIZE=${SIZE:-2048}
RUNS=${RUNS:-5}
SKIP_OUTPOST=${SKIP_OUTPOST:-0}
SKIP_CF_AGENT=${SKIP_CF_AGENT:-0}
STRICT=${STRICT:-0}
CACHE_VERSION=1 # bump when the way the cached repository/bundle is made changes

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
gen="$here/gen-www.py"

name=apply.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
TIMED_SYNC=1

read -r -a sizes <<<"$FILES"
[[ ${#sizes[@]} -gt 0 ]] || die "FILES must list at least one number of files"
for files in "${sizes[@]}"; do
    [[ $files =~ ^[1-9][0-9]*$ ]] || die "FILES must be positive integers separated by spaces (got '$FILES')"
done
{ [[ $SIZE =~ ^[1-9][0-9]*$ ]] && ((SIZE >= 64)); } || die "SIZE must be an integer >= 64 (got '$SIZE')"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
for tool in git python3 ssh-keygen awk sha256sum diff sync; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
command -v rsync >/dev/null || die "rsync is required; install it with: apt-get install -y rsync"
# (grep reads all of the help: with -q it may stop early, and rsync's SIGPIPE fails the pipe)
rsync --help 2>/dev/null | grep -- '--fsync' >/dev/null ||
    die "this rsync has no --fsync (needs rsync >= 3.2.4): $(rsync --version | head -n 1)"

# ---- the binary (first, so a broken build fails before the generation) -------------------------
find_outpost rsync
if [[ -n $outpost ]]; then
    "$outpost" --help 2>/dev/null | grep -qE '^ +apply ' ||
        die "$outpost has no apply command (set SKIP_OUTPOST=1 to time rsync alone)"
fi

# ---- cf-agent, when it is installed (this script installs nothing) --------------------------------
cf_agent="" cf_skipped=""
if [[ $SKIP_CF_AGENT == 1 ]]; then
    cf_skipped="SKIP_CF_AGENT=1"
elif ! command -v cf-agent >/dev/null; then
    cf_skipped="cf-agent is not on PATH; to compare with CFEngine install it: apt-get install -y cfengine3"
else
    cf_agent=$(command -v cf-agent)
    cf_promises=$(command -v cf-promises) ||
        die "cf-agent is at $cf_agent but cf-promises is not on PATH (cf-agent validates its policy with it)"
    cf_version=$("$cf_agent" --version 2>/dev/null | head -n 1)
fi
[[ -z $cf_skipped ]] || log "cf-agent skipped: $cf_skipped"

# ---- work dir, and the helpers of one size ---------------------------------------------------------
work_dir "$@"
fs_type=$(df -PT "$work" | awk 'NR == 2 { print $2 }')
manifest='[[tree]]
path = "/srv/www"
source = "www"'

# build_repo: the cached repository of $files files (in $cache).
build_repo() {
    rm -rf "$cache"
    mkdir -p "$cache/keys"
    local t0 t1
    t0=$(now_ns)
    git init -q -b main "$cache/repo"
    log "generating $files files of ~$SIZE bytes (bench/gen-www.py)"
    python3 "$gen" "$files" "$SIZE" "$src"
    printf '%s\n' "$manifest" >"$cache/repo/outpost.toml"

    ssh-keygen -q -t ed25519 -N "" -C "fleet@example.com" -f "$cache/keys/fleet_ed25519"
    printf 'fleet@example.com namespaces="git,outpost-bundle" %s\n' \
        "$(cut -d' ' -f1,2 "$cache/keys/fleet_ed25519.pub")" >"$cache/allowed_signers"
    git -C "$cache/repo" add -A
    GIT_AUTHOR_NAME="Fleet Release" GIT_AUTHOR_EMAIL="fleet@example.com" \
        GIT_COMMITTER_NAME="Fleet Release" GIT_COMMITTER_EMAIL="fleet@example.com" \
        GIT_AUTHOR_DATE="@1700000000 +0000" GIT_COMMITTER_DATE="@1700000000 +0000" \
        git -C "$cache/repo" -c gpg.format=ssh -c user.signingkey="$cache/keys/fleet_ed25519" \
        commit -q -S -m "release: apply benchmark"
    git -C "$cache/repo" -c gpg.ssh.allowedSignersFile="$cache/allowed_signers" \
        verify-commit main 2>/dev/null || die "the signed commit does not verify with git verify-commit"

    git -C "$cache/repo" bundle create -q "$bundle" main
    ssh-keygen -q -Y sign -f "$cache/keys/fleet_ed25519" -n outpost-bundle "$bundle"
    ssh-keygen -q -Y verify -f "$cache/allowed_signers" -I fleet@example.com -n outpost-bundle \
        -s "$bundle.sig" <"$bundle" >/dev/null || die "the bundle signature does not verify"
    git -C "$cache/repo" rev-parse main >"$cache/tip"
    t1=$(now_ns)
    secs "$t0" "$t1" >"$cache/gen-seconds"
    touch "$cache/.complete"
    log "repository generated in $(cat "$cache/gen-seconds") s"
}

# Nothing is deleted while the benchmark runs: ext4 skips inodes freed in the last minute
# or more when it allocates new ones, so deleting a tree of 10,000 files makes the next
# tree's creation (rsync's, cf-agent's or outpost's, whichever runs next) scan past them;
# measured, that turned 0.5 s copies into 8 s ones. What a run is done with is moved into
# the trash, emptied when the benchmark exits.
trash="$work/trash"
mkdir -p "$trash"
trap 'rm -rf "$trash"' EXIT
discard() { [[ ! -e $1 ]] || mv "$1" "$(mktemp -d "$trash/XXXXXX")/"; }
fresh_dir() { discard "$1" && mkdir -p "$1"; }

# same_tree WHAT DIR: diff -r SRC DIR must be clean.
same_tree() {
    if ! diff -r "$src" "$2" >"$run/diff.out" 2>&1; then
        echo "apply.sh: $1: diff -r $src $2 is not clean:" >&2
        head -n 20 "$run/diff.out" | sed 's/^/    /' >&2
        exit 1
    fi
}

# drift ROUND DIR: gives each listed file below DIR new content of the same size (written in
# place, so the inode and size stay) and a new mtime.
drift() {
    python3 - "$1" "$2" "$cache/drift.list" <<'EOF'
import os, sys
round_, top, listing = sys.argv[1], sys.argv[2], sys.argv[3]
for i, rel in enumerate(open(listing).read().split()):
    path = os.path.join(top, rel)
    size = os.path.getsize(path)
    mark = (b"DRIFT round %s file %d " % (round_.encode(), i)) * (size // 16 + 1)
    with open(path, "r+b") as f:
        old = f.read(64)
        new = mark[: len(old)]
        if not old or new == old:
            sys.exit("apply.sh: drift: cannot change %s" % path)
        f.seek(0)
        f.write(new)
    os.utime(path)
EOF
}

# outpost_ok WHEN: `outpost plan` exits 0 and the host tree matches SRC.
outpost_ok() {
    local status=0
    sync
    local t0 t1
    t0=$(now_ns)
    "$outpost" --config "$cfg" plan --stat >"$run/plan.out" 2>"$run/plan.err" || status=$?
    t1=$(now_ns)
    plan_wall=$(secs "$t0" "$t1")
    if [[ $status -ne 0 ]]; then
        echo "apply.sh: $1: outpost plan exited $status (0 expected: no drift):" >&2
        sed 's/^/    /' "$run/plan.out" "$run/plan.err" >&2
        exit 1
    fi
    same_tree "$1" "$host_www"
}

warm_src() { find "$src" -type f -exec cat {} + >/dev/null; }

# cf_setup: cf-agent's work dir and its standalone policy in the run dir; the policy is checked
# with cf-promises (untimed; that also brings CFEngine's libraries into the page cache).
cf_setup() {
    case "$src$cf_dst" in
    *'"'* | *'$'* | *\\*) die "the work dir $work has a character that cannot go in a CFEngine string" ;;
    esac
    mkdir -p "$cf_work/bin"
    ln -s "$cf_promises" "$cf_work/bin/cf-promises"
    # A files promise on DST: copy_from SRC (a local copy; compare the content by digest, keep
    # the mode (preserve) and the times (stealth) like rsync -a, no FILE.cfsaved backup of a
    # replaced file), over the whole tree (depth_search, depth inf). Nothing else is needed for
    # a first copy into an empty directory: cf-agent creates the subdirectories as it recurses.
    cat >"$cf_policy" <<EOF
body common control
{
  bundlesequence => { "bench_copy" };
}

bundle agent bench_copy
{
  files:
    "$cf_dst"
      copy_from => bench_local_copy("$src"),
      depth_search => bench_recurse;
}

body copy_from bench_local_copy(from)
{
  source => "\$(from)";
  compare => "digest";
  preserve => "true";
  stealth => "true";
  copy_backup => "false";
}

body depth_search bench_recurse
{
  depth => "inf";
}
EOF
    chmod 600 "$cf_policy" # cf-agent refuses a policy file others can write
    cf=("$cf_agent" --no-lock --workdir "$cf_work" --file "$cf_policy")
    if ! "$cf_promises" --workdir "$cf_work" --full-check "$cf_policy" >"$run/cf-promises.out" 2>&1; then
        echo "apply.sh: cf-promises does not accept the policy $cf_policy:" >&2
        sed 's/^/    /' "$run/cf-promises.out" >&2
        exit 1
    fi
    cat "$cf_agent" "$cf_promises" >/dev/null
}

# cf_check NAME: what cf-agent's last run (kept as NAME) made of its promises, from the
# promise_summary.log of its work dir, in $cf_outcome ("kept K%, repaired R%, not repaired
# N%"); an error it printed or a promise it did not keep stops the benchmark (cf-agent exits
# 0 either way).
cf_check() {
    cf_outcome=$(tail -n 1 "$cf_work/promise_summary.log" 2>/dev/null |
        sed -n 's/.*Promises observed to be kept \([0-9.]*%\), Promises repaired \([0-9.]*%\), Promises not repaired \([0-9.]*%\).*/kept \1, repaired \2, not repaired \3/p')
    if grep -q 'error:' "$run/$1.out" "$run/$1.err" || [[ $cf_outcome != *"not repaired 0.00%" ]]; then
        echo "apply.sh: $1: cf-agent did not keep its promise (${cf_outcome:-no outcome in $cf_work/promise_summary.log}):" >&2
        head -n 20 "$run/$1.out" "$run/$1.err" | sed 's/^/    /' >&2
        exit 1
    fi
}

# cf_counts WHEN: cf-agent's destination has as many files and directories as SRC.
cf_counts() {
    local f d
    f=$(find "$cf_dst" -type f | wc -l)
    d=$(find "$cf_dst" -mindepth 1 -type d | wc -l)
    [[ $f == "$n_files" && $d == "$n_dirs" ]] ||
        die "$1: cf-agent's destination has $f files and $d directories, not $n_files and $n_dirs"
}

# cf_restored WHEN: every drifted file in cf-agent's destination is SRC's again.
cf_restored() {
    local rel
    while read -r rel; do
        cmp -s "$src/$rel" "$cf_dst/$rel" || die "$1: cf-agent did not restore the drifted $rel"
    done <"$cache/drift.list"
}

# snapshot DIR: inode, ctime and path of everything below DIR (a rewrite or chmod shows).
snapshot() { find "$1" -printf '%i %C@ %p\n' | sort; }

# The runs of the sides alternate (rsync, cf-agent, outpost, rsync, cf-agent, outpost ...), so
# that whatever else the machine is doing weighs on all alike.

# measure NAME LABEL CMD... : one timed run of CMD, kept under NAME (the wall seconds of every
# run in order, largest peak RSS); prints a progress line ending with the last line CMD printed.
declare -A walls peak
measure() {
    local name=$1 label=$2
    shift 2
    timed "$name" "$@"
    walls[$name]="${walls[$name]:-} $wall"
    peak[$name]=$(max "$rss" "${peak[$name]:-}")
    local said=""
    case $name in
    outpost-*) said="  ($(tail -n 1 "$run/$name.out"))" ;;
    cf-*)
        cf_check "$name"
        said="  ($cf_outcome)"
        ;;
    esac
    printf '   %-22s %s: %s s, peak RSS %s MiB%s\n' "$label" "$run_label" "$wall" "$((rss / 1024))" "$said" >&2
}

# med NAME, lo NAME, hi NAME: the median, the smallest and the largest wall seconds of NAME.
med() { local -a w; read -r -a w <<<"${walls[$1]}"; awk -v m="$(median "${w[@]}")" 'BEGIN { printf "%.3f", m }'; }
lo() { local -a w; read -r -a w <<<"${walls[$1]}"; printf '%s\n' "${w[@]}" | sort -g | head -n 1; }
hi() { local -a w; read -r -a w <<<"${walls[$1]}"; printf '%s\n' "${w[@]}" | sort -g | tail -n 1; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
row() { # row LABEL NAME
    printf '  %-32s %8s %8s %8s %9s MiB\n' "$1" "$(med "$2")" "$(lo "$2")" "$(hi "$2")" "$(mib "${peak[$2]}")"
}

# The goals, and what each size made of them (summary[FILES,KEY] = "figure ok|MISSED").
missed=0
declare -A summary
# goal KEY LABEL NAME OVER-NAME LIMIT: the ratio of the medians against LIMIT; its noise is the
# range of the ratios of the paired runs (run i of NAME over run i of OVER-NAME, which ran
# next to each other).
goal() {
    local r ok range
    r=$(awk -v a="$(med "$3")" -v b="$(med "$4")" 'BEGIN { printf "%.2f", a / b }')
    ok=$(awk -v r="$r" -v l="$5" 'BEGIN { print (r <= l) ? "ok" : "MISSED" }')
    [[ $ok == ok ]] || missed=1
    range=$(awk -v a="${walls[$3]}" -v b="${walls[$4]}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) { r = x[i] / y[i]; if (i == 1 || r < lo) lo = r; if (i == 1 || r > hi) hi = r }
        printf "%.2f-%.2f", lo, hi }')
    summary[$files,$1]="$r $ok"
    printf '  %-32s %8s   runs %-11s goal <= %-6s %s\n' "$2" "$r" "$range" "$5" "$ok"
}
# The peak RSS goal holds from this many files on (the issue sets it at 10,000 files).
RSS_GOAL_FILES=10000 RSS_GOAL_MIB=16
rss_goal() {
    local m ok
    m=$(mib "${peak[outpost-first]}")
    if ((files < RSS_GOAL_FILES)); then
        summary[$files,rss]="$m -"
        printf '  %-32s %8s   %-16s goal <= %s MiB from %s files\n' "peak RSS: outpost first apply" "$m" "MiB" \
            "$RSS_GOAL_MIB" "$RSS_GOAL_FILES"
        return
    fi
    ok=$(awk -v k="${peak[outpost-first]}" -v l="$RSS_GOAL_MIB" 'BEGIN { print (k <= l * 1024) ? "ok" : "MISSED" }')
    [[ $ok == ok ]] || missed=1
    summary[$files,rss]="$m $ok"
    printf '  %-32s %8s   %-16s goal <= %-6s %s\n' "peak RSS: outpost first apply" "$m" "MiB" "$RSS_GOAL_MIB" "$ok"
}

# ---- one size: FILES files -------------------------------------------------------------------------
bench_size() {
    files=$1
    walls=() peak=() odd=()
    local i said key

    # -- the cached repository
    key=$( (echo "cache=$CACHE_VERSION files=$files size=$SIZE"; echo "$manifest"; cat "$gen") |
        sha256sum | cut -c1-12)
    cache="$work/www-f$files-s$SIZE-$key"
    bundle="$cache/site.bundle"
    src="$cache/repo/www"
    if [[ -f $cache/.complete ]]; then
        log "using the cached repository $cache (generated in $(cat "$cache/gen-seconds") s)"
    else
        build_repo
    fi
    # SRC must still be exactly the commit's www/ (nothing below ever writes to it).
    [[ -z $(git -C "$cache/repo" status --porcelain) ]] ||
        die "the cached checkout $cache/repo has changed; remove $cache to regenerate it"
    tip=$(cat "$cache/tip")
    n_files=$(find "$src" -type f | wc -l)
    n_dirs=$(find "$src" -mindepth 1 -type d | wc -l)
    src_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    bundle_bytes=$(stat -c %s "$bundle")

    # The drifted files: 1% of them (at least one), spread evenly over the sorted list.
    n_drift=$(((files + 99) / 100))
    (cd "$src" && find . -type f | sed 's|^\./||' | sort) |
        awk -v n="$files" -v k="$n_drift" 'NR % int(n / k) == 0 && c < k { print; c++ }' >"$cache/drift.list"
    n_drift=$(wc -l <"$cache/drift.list")

    # -- the run directory
    run="$work/run"
    fresh_dir "$run"
    cp "$cache/allowed_signers" "$run/allowed_signers"
    cat >"$run/config.toml" <<'EOF'
[host]
name = "bench-host"
root = "host"

[state]
dir = "state"

[trust]
allowed_signers = "allowed_signers"

[source]
max_bundle_size = "2GiB"

[apply]
set_owner = false
EOF
    cfg="$run/config.toml"
    host_www="$run/host/srv/www"
    cf_dst="$run/dst-cf" cf_work="$run/cf-work" cf_policy="$run/copy.cf"
    [[ -z $cf_agent ]] || cf_setup

    # -- 1. first copy
    log "$files files: timing the first copy ($RUNS runs each; $n_files files, $n_dirs directories, fs $fs_type)"
    warm_src
    [[ -z $outpost ]] || cat "$bundle" "$bundle.sig" "$outpost" >/dev/null
    for i in $(seq "$RUNS"); do
        run_label="run $i"
        fresh_dir "$run/dst-nofsync"
        measure rsync-first "rsync -a" rsync -a "$src/" "$run/dst-nofsync/"
        fresh_dir "$run/dst"
        measure rsync-first-fsync "rsync -a --fsync" rsync -a --fsync "$src/" "$run/dst/"
        if [[ -n $cf_agent ]]; then
            fresh_dir "$cf_dst"
            measure cf-first "cf-agent" "${cf[@]}"
            cf_counts "cf-agent's first copy, run $i"
        fi
        if [[ -n $outpost ]]; then
            discard "$run/state"
            fresh_dir "$run/host"
            timed outpost-import "$outpost" --config "$cfg" import "$bundle"
            walls[outpost-import]="${walls[outpost-import]:-} $wall"
            measure outpost-first "outpost apply" "$outpost" --config "$cfg" apply
        fi
    done
    same_tree "rsync -a" "$run/dst-nofsync"
    discard "$run/dst-nofsync"
    same_tree "rsync -a --fsync" "$run/dst"
    if [[ -n $cf_agent ]]; then
        same_tree "cf-agent's first copy" "$cf_dst"
        echo "$files files, cf-agent's first copy: $n_files files, diff -r clean (ok)"
    fi
    if [[ -n $outpost ]]; then
        outpost_ok "after the first apply"
        echo "$files files, first apply: diff -r clean, outpost plan exit 0 (ok)"
    fi

    # -- 2. no-op
    log "$files files: timing the no-op ($RUNS runs each)"
    if [[ -n $outpost ]]; then
        sleep 1.1 # past the stat cache's racy window
        run_label="untimed"
        measure outpost-noop0 "outpost apply" "$outpost" --config "$cfg" apply
        head -n 1 "$run/outpost-noop0.out" | grep -q '^no changes' ||
            odd+=("the first no-op apply after the deployment changed something: $(tail -n 1 "$run/outpost-noop0.out")")
    fi
    [[ -z $cf_agent ]] || snapshot "$cf_dst" >"$run/cf-before-noop"
    for i in $(seq "$RUNS"); do
        run_label="run $i"
        measure rsync-noop "rsync -a" rsync -a "$src/" "$run/dst/"
        if [[ -n $cf_agent ]]; then
            measure cf-noop "cf-agent" "${cf[@]}"
            [[ $cf_outcome == *"repaired 0.00%"* ]] ||
                odd+=("cf-agent's no-op run $i repaired something: $cf_outcome")
        fi
        if [[ -n $outpost ]]; then
            measure outpost-noop "outpost apply" "$outpost" --config "$cfg" apply
            head -n 1 "$run/outpost-noop.out" | grep -q '^no changes' ||
                odd+=("no-op apply run $i changed something: $(tail -n 1 "$run/outpost-noop.out")")
        fi
    done
    if [[ -n $cf_agent ]] && ! snapshot "$cf_dst" | cmp -s - "$run/cf-before-noop"; then
        odd+=("cf-agent's no-op runs rewrote or changed files (inode or ctime) in its destination")
    fi

    # -- 3. drift repair
    log "$files files: timing the repair of $n_drift drifted files ($RUNS runs each)"
    for i in $(seq "$RUNS"); do
        run_label="run $i"
        drift "$i" "$run/dst"
        [[ -z $cf_agent ]] || drift "$i" "$cf_dst"
        [[ -z $outpost ]] || drift "$i" "$host_www"
        measure rsync-fix "rsync -a --checksum" rsync -a --checksum "$src/" "$run/dst/"
        if [[ -n $cf_agent ]]; then
            measure cf-fix "cf-agent" "${cf[@]}"
            cf_restored "cf-agent's repair, run $i"
        fi
        if [[ -n $outpost ]]; then
            measure outpost-fix "outpost apply" "$outpost" --config "$cfg" apply
            said=$(tail -n 1 "$run/outpost-fix.out")
            [[ $said =~ [^0-9]$n_drift\ drifted\ paths\ repaired ]] ||
                odd+=("repair run $i did not report $n_drift drifted paths repaired: $said")
        fi
    done
    same_tree "rsync -a --checksum" "$run/dst"
    if [[ -n $cf_agent ]]; then
        same_tree "cf-agent's repair" "$cf_dst"
        echo "$files files, cf-agent's repair: the $n_drift drifted files restored, diff -r clean (ok)"
    fi
    if [[ -n $outpost ]]; then
        outpost_ok "after the drift repair"
        echo "$files files, drift repair: diff -r clean, outpost plan exit 0 (ok)"
    fi

    # -- the report of this size
    echo
    echo "outpost apply benchmark  (FILES=$files SIZE=$SIZE; median of $RUNS alternating runs, warm page cache, sync before each)"
    echo "  work dir         $work ($fs_type)"
    echo "  tree             $n_files files in $n_dirs directories, $(mb "$src_bytes") -> /srv/www"
    echo "  bundle           $(mb "$bundle_bytes"), commit $tip"
    echo "  drift            $n_drift files (same size, new content and mtime)"
    echo "  generated in     $(cat "$cache/gen-seconds") s (once; cached)"
    if [[ -n $cf_agent ]]; then
        echo "  cf-agent         $cf_version: ${cf[*]}"
        echo "                   (copy_from, compare digest, depth_search; it does not fsync)"
    else
        echo "  cf-agent         skipped: $cf_skipped"
    fi
    echo
    printf '  %-32s %8s %8s %8s %13s\n' "" "median s" "min s" "max s" "peak RSS"
    echo "  first copy (empty destination)"
    row "  rsync -a --fsync" rsync-first-fsync
    row "  rsync -a" rsync-first
    [[ -z $cf_agent ]] || row "  cf-agent (no fsync)" cf-first
    [[ -z $outpost ]] || row "  outpost apply" outpost-first
    echo "  no-op"
    row "  rsync -a" rsync-noop
    [[ -z $cf_agent ]] || row "  cf-agent" cf-noop
    if [[ -n $outpost ]]; then
        row "  outpost apply" outpost-noop
        row "  outpost apply, first (untimed)" outpost-noop0
    fi
    echo "  drift repair ($n_drift files)"
    row "  rsync -a --checksum" rsync-fix
    [[ -z $cf_agent ]] || row "  cf-agent" cf-fix
    [[ -z $outpost ]] || row "  outpost apply" outpost-fix
    if [[ -n $outpost ]]; then
        printf '  %-32s %8s\n' "outpost import (untimed)" "$(med outpost-import)"
        printf '  %-32s %8s\n' "outpost plan, clean (once)" "$plan_wall"
        echo
        [[ -z $cf_agent ]] || goal first-cf "first: outpost / cf-agent" outpost-first cf-first 1.0
        goal first-fsync "first: outpost / rsync --fsync" outpost-first rsync-first-fsync 1.0
        goal noop "no-op: outpost / rsync" outpost-noop rsync-noop 0.3
        goal fix "repair: outpost / rsync -c" outpost-fix rsync-fix 0.3
        rss_goal
    else
        echo "  (outpost skipped: SKIP_OUTPOST=1)"
    fi
    if awk -v a="$(med rsync-first)" -v b="$(med rsync-first-fsync)" 'BEGIN { exit !(a > b) }'; then
        odd+=("rsync -a without fsync was slower than with it: the disk is noisy, distrust the first-copy ratio")
    fi
    if [[ ${#odd[@]} -gt 0 ]]; then
        echo
        echo "  odd:"
        printf '    %s\n' "${odd[@]}"
    fi
    echo
}

for files in "${sizes[@]}"; do
    bench_size "$files"
done

# ---- summary: every size against the goals ---------------------------------------------------------
cell() { # cell FILES KEY: "figure ok|MISSED", or "-" when it was not measured
    local v=${summary[$1,$2]:--}
    printf '%-22s' "${v/% -/}"
}
if [[ -n $outpost ]]; then
    echo "summary: outpost apply against the goals  (SIZE=$SIZE; ratios of the medians of $RUNS runs)"
    printf '  %-8s %-22s%-22s%-22s%-22s%s\n' "files" "first/cf-agent" "first/rsync --fsync" "no-op/rsync" \
        "repair/rsync -c" "peak RSS, first (MiB)"
    printf '  %-8s %-22s%-22s%-22s%-22s%s\n' "goal" "<= 1.0" "<= 1.0" "<= 0.3" "<= 0.3" \
        "<= $RSS_GOAL_MIB from $RSS_GOAL_FILES files"
    for files in "${sizes[@]}"; do
        printf '  %-8s %s%s%s%s%s\n' "$files" "$(cell "$files" first-cf)" "$(cell "$files" first-fsync)" \
            "$(cell "$files" noop)" "$(cell "$files" fix)" "$(cell "$files" rss | sed 's/ *$//')"
    done
    [[ -z $cf_skipped ]] || echo "  (cf-agent skipped: $cf_skipped)"
fi
if [[ $# -lt 1 ]]; then
    echo
    echo "re-run with the cached repositories: $0 $work"
fi
if [[ $STRICT == 1 && $missed == 1 ]]; then
    exit 1
fi
