#!/usr/bin/env bash
# Benchmark: `outpost sync` against a local git daemon versus `git fetch` of the same repository.
#
#   bench/sync.sh [WORKDIR]
#
# Builds (once; cached in WORKDIR, keyed on the parameters) a repository with bench/gen-history.py
# and an SSH-signed tip, serves a bare copy with `git daemon` on 127.0.0.1, and times:
#   first:     a first sync into a fresh state dir   vs  git fetch into an empty bare repository
#   no-change: a sync when nothing changed            vs  git fetch of a clone that is up to date
# RUNS runs of each, alternating; prints medians and the ratios outpost/git (the goal for the
# no-change round trip is <= 1.5).
#
# Environment:
#   COMMITS=1500 FILES=3000   size of the history (~14 MB packed)
#   RUNS=10                   timed runs of each side; medians are reported
#   OUTPOST=path, NO_BUILD=1  as in bench/import.sh
#   STRICT=1                  exit 1 when the no-change goal is missed
set -euo pipefail

COMMITS=${COMMITS:-1500}
FILES=${FILES:-3000}
RUNS=${RUNS:-10}
STRICT=${STRICT:-0}
CACHE_VERSION=1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
gen="$here/gen-history.py"
name=sync.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

[[ $COMMITS =~ ^[1-9][0-9]*$ ]] || die "COMMITS must be a positive integer (got '$COMMITS')"
[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "FILES must be a positive integer (got '$FILES')"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
for tool in git python3 ssh-keygen awk sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

find_outpost git
work_dir "$@"
key=$( (echo "cache=$CACHE_VERSION commits=$COMMITS files=$FILES"; cat "$gen") | sha256sum | cut -c1-12)
cache="$work/sync-c$COMMITS-f$FILES-$key"

if [[ ! -f $cache/.complete ]]; then
    rm -rf "$cache"
    mkdir -p "$cache/keys" "$cache/served"
    log "generating $COMMITS commits touching $FILES files"
    git init -q -b main "$cache/repo"
    python3 "$gen" "$COMMITS" "$FILES" | git -C "$cache/repo" -c core.compression=1 fast-import --quiet --done
    git -C "$cache/repo" repack -q -a -d -f -F
    ssh-keygen -q -t ed25519 -N "" -C "fleet@example.com" -f "$cache/keys/fleet_ed25519"
    printf 'fleet@example.com namespaces="git" %s\n' \
        "$(cut -d' ' -f1,2 "$cache/keys/fleet_ed25519.pub")" >"$cache/allowed_signers"
    when=$(($(git -C "$cache/repo" log -1 --format=%ct main) + 3600))
    git -C "$cache/repo" read-tree main
    GIT_AUTHOR_NAME="Fleet Release" GIT_AUTHOR_EMAIL="fleet@example.com" \
        GIT_COMMITTER_NAME="Fleet Release" GIT_COMMITTER_EMAIL="fleet@example.com" \
        GIT_AUTHOR_DATE="@$when +0000" GIT_COMMITTER_DATE="@$when +0000" \
        git -C "$cache/repo" -c gpg.format=ssh -c user.signingkey="$cache/keys/fleet_ed25519" \
        commit -q -S --allow-empty -m "release: benchmark tip"
    git clone -q --bare "$cache/repo" "$cache/served/fleet.git"
    touch "$cache/.complete"
fi
tip=$(git -C "$cache/repo" rev-parse main)
pack_bytes=$(du -sb "$cache/served/fleet.git/objects" | cut -f1)

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$cache/served" --export-all \
    --pid-file="$work/daemon.pid" --detach
trap 'kill "$(cat "$work/daemon.pid")" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    git ls-remote "git://127.0.0.1:$port/fleet.git" >/dev/null 2>&1 && break
    sleep 0.1
done
url="git://127.0.0.1:$port/fleet.git"

run="$work/run"
rm -rf "$run"
mkdir -p "$run"
cp "$cache/allowed_signers" "$run/allowed_signers"
cat >"$run/config.toml" <<EOF
[host]
name = "bench-host"
root = "host"

[state]
dir = "state"

[trust]
allowed_signers = "allowed_signers"

[source]
url = "$url"
EOF

log "timing a first sync and a first git fetch, alternating ($RUNS runs each)"
first_out=() first_git=()
for i in $(seq "$RUNS"); do
    rm -rf "$run/dst.git"
    timed git-first sh -c 'git init -q --bare "$1" && git -C "$1" fetch --quiet "$2" main:main' sh "$run/dst.git" "$url"
    first_git+=("$wall")
    rm -rf "$run/state"
    timed outpost-first "$outpost" --config "$run/config.toml" sync
    first_out+=("$wall")
    echo "   run $i: git fetch ${first_git[-1]} s, outpost sync ${first_out[-1]} s" >&2
done
grep -q "^accepted " "$run/outpost-first.out" || die "the first sync did not accept the tip: $(cat "$run/outpost-first.out")"

log "timing no-change round trips, alternating ($RUNS runs each)"
same_out=() same_git=()
for i in $(seq "$RUNS"); do
    timed git-same git -C "$run/dst.git" fetch --quiet "$url" main:main
    same_git+=("$wall")
    timed outpost-same "$outpost" --config "$run/config.toml" sync
    same_out+=("$wall")
done
grep -q "^up to date " "$run/outpost-same.out" || die "the no-change sync said: $(cat "$run/outpost-same.out")"
[[ $(git -C "$run/dst.git" rev-parse main) == "$tip" ]] || die "git fetch did not reach the tip"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
fo=$(median "${first_out[@]}") fg=$(median "${first_git[@]}")
so=$(median "${same_out[@]}") sg=$(median "${same_git[@]}")
echo
echo "outpost sync benchmark  (COMMITS=$COMMITS FILES=$FILES; median of $RUNS alternating runs)"
echo "  repository     $(mb "$pack_bytes") of objects served by git daemon on 127.0.0.1"
printf '  %-12s %12s %12s %8s\n' "" "outpost s" "git fetch s" "ratio"
printf '  %-12s %12s %12s %8s\n' "first" "$fo" "$fg" "$(ratio "$fo" "$fg")"
printf '  %-12s %12s %12s %8s   (goal <= 1.5)\n' "no-change" "$so" "$sg" "$(ratio "$so" "$sg")"
if [[ $STRICT == 1 ]] && awk -v r="$(ratio "$so" "$sg")" 'BEGIN { exit !(r > 1.5) }'; then
    die "the no-change sync is slower than 1.5x git fetch"
fi
