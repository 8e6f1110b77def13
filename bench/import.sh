#!/usr/bin/env bash
# Benchmark: importing a large signed bundle with `outpost import` versus `git fetch`.
#
#   bench/import.sh [WORKDIR]
#
# Builds (once; cached in WORKDIR, keyed on the parameters) a repository of realistic size,
# with a history made by `git fast-import` from bench/gen-history.py and an SSH-signed tip,
# bundles it and signs the bundle. Then times RUNS runs of each side, alternating, with a fresh
# destination each time and a warm page cache:
#   (a) git init --bare dst && git -C dst fetch --quiet site.bundle main:main
#   (b) outpost --config cfg import site.bundle            (fresh state dir)
# and prints the median wall seconds, peak RSS, the ratio outpost/git (goal <= 1.0) and the
# binary size (goal <= 15 MB).
#
# Environment:
#   COMMITS=5000 FILES=20000   size of the history (~100 MB packed by default);
#                              COMMITS=1500 FILES=3000 is the small case (~14 MB), where the
#                              fixed cost of an import shows; COMMITS=200 FILES=1000 a quick run
#   RUNS=5                     timed runs of each side, alternating; medians are reported
#   OUTPOST=path               use this binary instead of building target/release/outpost
#   NO_BUILD=1                 do not run cargo; use target/release/outpost as it is
#   SKIP_OUTPOST=1             only build the repository and time git
#   STRICT=1                   exit 1 when a goal is missed
#
# WORKDIR defaults to a new `mktemp -d` under /tmp; pass the same one again to reuse the
# generated repository (generating the default size takes a minute or two).
set -euo pipefail

COMMITS=${COMMITS:-5000}
FILES=${FILES:-20000}
RUNS=${RUNS:-5}
SKIP_OUTPOST=${SKIP_OUTPOST:-0}
STRICT=${STRICT:-0}
CACHE_VERSION=1 # bump when the way the cached repository/bundle is made changes

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
gen="$here/gen-history.py"

name=import.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

[[ $COMMITS =~ ^[1-9][0-9]*$ ]] || die "COMMITS must be a positive integer (got '$COMMITS')"
[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "FILES must be a positive integer (got '$FILES')"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
for tool in git python3 ssh-keygen awk sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# ---- the binary (first, so a broken build fails before the long generation) ----------------
find_outpost git

# ---- work dir and cached repository ------------------------------------------------------------
work_dir "$@"
key=$( (echo "cache=$CACHE_VERSION commits=$COMMITS files=$FILES"; cat "$gen") | sha256sum | cut -c1-12)
cache="$work/repo-c$COMMITS-f$FILES-$key"
bundle="$cache/site.bundle"

build_repo() {
    rm -rf "$cache"
    mkdir -p "$cache/keys"
    local t0 t1 t2 t3
    t0=$(now_ns)
    git init -q -b main "$cache/repo"
    log "generating $COMMITS commits touching $FILES files (python3 | git fast-import)"
    # Low compression while importing: the repack below recompresses everything anyway.
    python3 "$gen" "$COMMITS" "$FILES" |
        git -C "$cache/repo" -c core.compression=1 fast-import --quiet --done
    t1=$(now_ns)
    log "fast-import done in $(secs "$t0" "$t1") s; repacking (git repack -adfF, as a publisher's gc would)"
    git -C "$cache/repo" repack -q -a -d -f -F
    t2=$(now_ns)
    log "repack done in $(secs "$t1" "$t2") s; signing the tip"

    # Only the tip needs a signature: a fresh key, an empty signed commit on top of the history.
    ssh-keygen -q -t ed25519 -N "" -C "fleet@example.com" -f "$cache/keys/fleet_ed25519"
    printf 'fleet@example.com namespaces="git,outpost-bundle" %s\n' \
        "$(cut -d' ' -f1,2 "$cache/keys/fleet_ed25519.pub")" >"$cache/allowed_signers"
    local when
    when=$(($(git -C "$cache/repo" log -1 --format=%ct main) + 3600))
    git -C "$cache/repo" read-tree main # the index only; the tip keeps the same tree
    GIT_AUTHOR_NAME="Fleet Release" GIT_AUTHOR_EMAIL="fleet@example.com" \
        GIT_COMMITTER_NAME="Fleet Release" GIT_COMMITTER_EMAIL="fleet@example.com" \
        GIT_AUTHOR_DATE="@$when +0000" GIT_COMMITTER_DATE="@$when +0000" \
        git -C "$cache/repo" -c gpg.format=ssh -c user.signingkey="$cache/keys/fleet_ed25519" \
        commit -q -S --allow-empty -m "release: benchmark tip"
    git -C "$cache/repo" -c gpg.ssh.allowedSignersFile="$cache/allowed_signers" \
        verify-commit main 2>/dev/null || die "the signed tip does not verify with git verify-commit"

    git -C "$cache/repo" bundle create -q "$bundle" main
    ssh-keygen -q -Y sign -f "$cache/keys/fleet_ed25519" -n outpost-bundle "$bundle"
    ssh-keygen -q -Y verify -f "$cache/allowed_signers" -I fleet@example.com -n outpost-bundle \
        -s "$bundle.sig" <"$bundle" >/dev/null || die "the bundle signature does not verify"
    t3=$(now_ns)
    secs "$t0" "$t3" >"$cache/gen-seconds"
    git -C "$cache/repo" rev-parse main >"$cache/tip"
    touch "$cache/.complete"
    log "repository generated in $(cat "$cache/gen-seconds") s"
}

if [[ -f $cache/.complete ]]; then
    log "using the cached repository $cache (generated in $(cat "$cache/gen-seconds") s)"
else
    build_repo
fi
tip=$(cat "$cache/tip")
n_commits=$(git -C "$cache/repo" rev-list --count main)
n_files=$(git -C "$cache/repo" ls-tree -r main | wc -l)
bundle_bytes=$(stat -c %s "$bundle")

# ---- the run directory: config and a fresh state for every timed run -----------------------------
run="$work/run"
rm -rf "$run"
mkdir -p "$run"
cp "$cache/allowed_signers" "$run/allowed_signers"
cat >"$run/config.toml" <<'EOF'
[host]
name = "bench-host"
labels = { site = "bench", role = "bench" }
root = "host"

[state]
dir = "state"

[trust]
allowed_signers = "allowed_signers"

[source]
branch = "main"
max_bundle_size = "2GiB"
EOF


warm() { cat "$bundle" "$bundle.sig" "$@" >/dev/null; }

# ---- (a) git fetch and (b) outpost import, alternating ------------------------------------------
[[ -n $outpost ]] || log "outpost skipped: SKIP_OUTPOST=1"
log "timing git fetch and outpost import of the bundle, alternating ($RUNS runs each)"
warm ${outpost:+"$outpost"}
git_walls=() git_rss="" out_walls=() out_rss="" bin_bytes=""
for i in $(seq "$RUNS"); do
    rm -rf "$run/dst.git"
    timed git-fetch sh -c 'git init -q --bare "$1" && git -C "$1" fetch --quiet "$2" main:main' \
        sh "$run/dst.git" "$bundle"
    echo "   git fetch      run $i: $wall s, peak RSS $((rss / 1024)) MiB" >&2
    git_walls+=("$wall")
    git_rss=$(max "$rss" "$git_rss")
    if [[ -n $outpost ]]; then
        rm -rf "$run/state" "$run/host"
        mkdir -p "$run/host"
        timed outpost-import "$outpost" --config "$run/config.toml" import "$bundle"
        echo "   outpost import run $i: $wall s, peak RSS $((rss / 1024)) MiB" >&2
        out_walls+=("$wall")
        out_rss=$(max "$rss" "$out_rss")
    fi
done
git_best=$(median "${git_walls[@]}")
got=$(git -C "$run/dst.git" rev-parse main)
[[ $got == "$tip" ]] || die "git fetch sanity check: dst main is $got, expected $tip"
echo "git fetch: dst main = $tip (ok)"
echo "bundle objects (git count-objects -v of the fetch destination):"
git -C "$run/dst.git" count-objects -v | sed 's/^/    /'
git -C "$run/dst.git" cat-file --batch-all-objects --batch-check='%(objecttype)' |
    sort | uniq -c | awk '{ printf "    %-8s %d\n", $2 ":", $1 }'
in_pack=$(git -C "$run/dst.git" count-objects -v | awk '$1 == "in-pack:" { print $2 }')

out_best=""
if [[ -n $outpost ]]; then
    out_best=$(median "${out_walls[@]}")
    # Sanity check on the state of the last run: the tip is the trusted commit.
    timed outpost-status "$outpost" --config "$run/config.toml" status --json
    trusted=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
t = d.get("trusted") or {}
print(t.get("commit") or "")
' "$run/outpost-status.out") || {
        echo "import.sh: outpost status --json did not print valid JSON:" >&2
        sed 's/^/    /' "$run/outpost-status.out" "$run/outpost-status.err" >&2
        exit 1
    }
    if [[ $trusted != "$tip" ]]; then
        echo "import.sh: outpost status --json: trusted.commit is '${trusted}', expected $tip" >&2
        sed 's/^/    /' "$run/outpost-status.out" "$run/outpost-status.err" "$run/outpost-import.err" >&2
        exit 1
    fi
    echo "outpost status: trusted.commit = $tip (ok)"
    bin_bytes=$(stat -c %s "$outpost")
fi

# ---- report ------------------------------------------------------------------------------------------
echo
echo "outpost import benchmark  (COMMITS=$COMMITS FILES=$FILES; median of $RUNS alternating runs, warm page cache)"
echo "  work dir         $work"
echo "  repository       $n_commits commits, $n_files files at the tip, $in_pack objects"
echo "  bundle           $(mb "$bundle_bytes") ($bundle_bytes bytes)"
echo "  generated in     $(cat "$cache/gen-seconds") s (once; cached)"
echo
printf '  %-18s %10s %14s\n' "" "wall s" "peak RSS"
printf '  %-18s %10s %11s MiB\n' "git fetch" "$git_best" "$((git_rss / 1024))"
missed=0
if [[ -n $outpost ]]; then
    printf '  %-18s %10s %11s MiB\n' "outpost import" "$out_best" "$((out_rss / 1024))"
    ratio=$(awk -v a="$out_best" -v b="$git_best" 'BEGIN { printf "%.2f", a / b }')
    ok_ratio=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.0) ? "ok" : "MISSED" }')
    ok_size=$(awk -v b="$bin_bytes" 'BEGIN { print (b <= 15e6) ? "ok" : "MISSED" }')
    echo
    printf '  %-18s %10s   goal <= 1.0   %s\n' "ratio outpost/git" "$ratio" "$ok_ratio"
    printf '  %-18s %10s   goal <= 15 MB %s\n' "outpost binary" "$(mb "$bin_bytes")" "$ok_size"
    [[ $ok_ratio == ok && $ok_size == ok ]] || missed=1
else
    echo "  (outpost skipped: SKIP_OUTPOST=1)"
fi
if [[ $# -lt 1 ]]; then
    echo
    echo "re-run with the cached repository: $0 $work"
fi
if [[ $STRICT == 1 && $missed == 1 ]]; then
    exit 1
fi
