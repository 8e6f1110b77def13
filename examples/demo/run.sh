#!/usr/bin/env bash
# The outpost demo: a kiosk receives its fleet state as signed bundles, offline.
#
#   examples/demo/run.sh            (from any directory; no root, no network)
#
# Builds outpost (or uses $OUTPOST), starts from an empty host root (host/) and agent state
# (state/), then: verifies the full bundle, imports it, imports an incremental update, replays
# the old bundle (a no-op), applies the trusted commit to host/, repairs a hand edit, and
# shows the history and the status.
set -euo pipefail

demo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$demo/../.." && pwd)

if [[ -n ${OUTPOST:-} ]]; then
    if [[ $OUTPOST == */* ]]; then
        outpost=$(cd "$(dirname "$OUTPOST")" && pwd)/$(basename "$OUTPOST")
    else
        outpost=$(command -v "$OUTPOST") || { echo "run.sh: OUTPOST=$OUTPOST not found on PATH" >&2; exit 1; }
    fi
else
    echo "+ cargo build --release --locked --quiet"
    (cd "$root" && cargo build --release --locked --quiet)
    outpost="$root/target/release/outpost"
fi
[[ -x $outpost ]] || { echo "run.sh: no outpost binary at $outpost" >&2; exit 1; }

cd "$demo"
for f in config.toml allowed_signers site.bundle site.bundle.sig update.bundle update.bundle.sig; do
    [[ -f $f ]] || { echo "run.sh: examples/demo/$f is missing (make-bundle.sh makes the bundles)" >&2; exit 1; }
done

# Every step must succeed: the demo stops at the first one that does not.
step() {
    echo
    echo "# $1"
    shift
    echo "+ outpost --config config.toml $*"
    local rc=0
    "$outpost" --config config.toml "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "run.sh: 'outpost $*' failed (exit $rc); the demo stops here." >&2
        exit "$rc"
    fi
}

echo "+ rm -rf host state && mkdir host state"
rm -rf host state
mkdir host state

step "Check the full bundle and its signature against allowed_signers; nothing changes." \
    verify site.bundle
step "Import it: the signature is checked before the bundle is parsed, the tip commit's signature too." \
    import site.bundle
step "An incremental bundle (commit 1..main) with one changed file arrives later." \
    import update.bundle
step "The old stick is plugged in again: a replay, nothing changes (never a rollback)." \
    import site.bundle
step "Make the host match the trusted commit: files, directories, a symlink, under host/." \
    apply

echo
echo "# Someone edits a managed file by hand..."
echo "+ echo 'local hack' >> host/etc/kiosk/motd"
echo 'local hack' >> host/etc/kiosk/motd
step "...and the next reconcile puts it back, naming the path and the commit." \
    apply
step "The deployments and the drift they repaired." \
    history
step "Where the host stands now." \
    status

echo
echo "Demo done: the host root is examples/demo/host, the agent state examples/demo/state."
