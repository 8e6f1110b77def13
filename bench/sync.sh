#!/usr/bin/env bash
# Benchmark: a no-change upstream sync round trip, `outpost sync` against `git fetch`, both from
# a `git daemon` on 127.0.0.1 serving the same repository.
#
#   bench/sync.sh [WORKDIR]
#
# The repository is COMMITS commits over FILES files (bench/gen-history.py) with a signed tip.
# Both sides fetch it once; then RUNS alternating no-change fetches of each are timed and the
# medians compared (goal: outpost <= 1.5x git fetch).
#
# Environment: COMMITS=200 FILES=1000 RUNS=9 OUTPOST=path NO_BUILD=1
set -euo pipefail

COMMITS=${COMMITS:-200}
FILES=${FILES:-1000}
RUNS=${RUNS:-9}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
name=sync.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
for tool in git ssh-keygen python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
find_outpost sync
[[ -n $outpost ]] || die "nothing to time without outpost"
work_dir "$@"

serve="$work/served"
rm -rf "$serve" "$work/repo" "$work/keys" "$work/state" "$work/dst.git"
mkdir -p "$serve" "$work/keys"
log "generating $COMMITS commits over $FILES files"
git init -q -b main "$work/repo"
python3 "$here/gen-history.py" "$COMMITS" "$FILES" | git -C "$work/repo" fast-import --quiet --done
ssh-keygen -q -t ed25519 -N "" -C fleet@example.com -f "$work/keys/fleet"
printf 'fleet@example.com namespaces="git,outpost-bundle" %s\n' \
    "$(cut -d' ' -f1,2 "$work/keys/fleet.pub")" >"$work/allowed_signers"
when=$(($(git -C "$work/repo" log -1 --format=%ct main) + 3600))
git -C "$work/repo" read-tree main
GIT_AUTHOR_NAME=Fleet GIT_AUTHOR_EMAIL=fleet@example.com GIT_COMMITTER_NAME=Fleet \
    GIT_COMMITTER_EMAIL=fleet@example.com GIT_AUTHOR_DATE="@$when +0000" \
    GIT_COMMITTER_DATE="@$when +0000" \
    git -C "$work/repo" -c gpg.format=ssh -c user.signingkey="$work/keys/fleet" \
    commit -q -S --allow-empty -m "release: benchmark tip"
git clone -q --bare "$work/repo" "$serve/fleet.git"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
git daemon --reuseaddr --listen=127.0.0.1 --port="$port" --base-path="$serve" --export-all \
    --pid-file="$work/git-daemon.pid" --detach
trap 'kill "$(cat "$work/git-daemon.pid")" 2>/dev/null || true' EXIT
url="git://127.0.0.1:$port/fleet.git"
for _ in $(seq 50); do git ls-remote "$url" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$work/config.toml" <<EOF
[host]
name = "bench-host"
root = "host"

[state]
dir = "state"

[source]
url = "$url"

[trust]
allowed_signers = "allowed_signers"
EOF
mkdir -p "$work/host"
run="$work/run"
mkdir -p "$run"
git init -q --bare "$work/dst.git"
git -C "$work/dst.git" fetch --quiet "$url" main:main
"$outpost" --config "$work/config.toml" sync >/dev/null

log "timing no-change fetches, alternating ($RUNS runs each)"
git_walls=() out_walls=()
for i in $(seq "$RUNS"); do
    timed git-fetch git -C "$work/dst.git" fetch --quiet "$url" main:main
    git_walls+=("$wall")
    timed outpost-sync "$outpost" --config "$work/config.toml" sync
    out_walls+=("$wall")
    echo "   run $i: git fetch ${git_walls[-1]} s, outpost sync ${out_walls[-1]} s" >&2
done
grep -q "up to date" "$run/outpost-sync.out" || die "outpost sync did not find the host up to date: $(cat "$run/outpost-sync.out")"
git_med=$(median "${git_walls[@]}")
out_med=$(median "${out_walls[@]}")
ratio=$(awk -v a="$out_med" -v b="$git_med" 'BEGIN { printf "%.2f", a / b }')
echo
echo "no-change sync round trip  ($COMMITS commits, $FILES files; median of $RUNS alternating runs)"
printf '  %-18s %8s s\n' "git fetch" "$git_med"
printf '  %-18s %8s s\n' "outpost sync" "$out_med"
printf '  %-18s %8s     goal <= 1.5\n' "ratio" "$ratio"
