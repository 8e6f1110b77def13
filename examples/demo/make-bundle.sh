#!/usr/bin/env bash
# Regenerate the demo's signed bundles from fleet/ and the demo key, the way a publisher would
# with stock git and ssh-keygen:
#
#   site.bundle   + .sig   full bundle of the first commit (main = commit 1)
#   update.bundle + .sig   incremental bundle commit1..main (commit 2 changes one file)
#   allowed_signers        the demo key, trusted for commits (git) and bundles (outpost-bundle)
#
# Both commits are SSH-signed. Names, emails and dates are fixed, and ed25519 signatures are
# deterministic, so re-running this produces the same commits and the same bundles.
# The demo key is for the demo only: never sign a real fleet with it.
set -euo pipefail

demo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
principal="demo@example.com"

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null LC_ALL=C TZ=UTC
export GIT_AUTHOR_NAME="Demo Publisher" GIT_AUTHOR_EMAIL="$principal"
export GIT_COMMITTER_NAME="Demo Publisher" GIT_COMMITTER_EMAIL="$principal"

tmp=$(mktemp -d /tmp/outpost-demo-bundle.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# A checkout leaves the key world-readable (git stores no modes but 644/755) and ssh-keygen
# refuses such a key, so sign with a private copy.
install -m 600 "$demo/keys/demo_ed25519" "$tmp/key"
cp "$demo/keys/demo_ed25519.pub" "$tmp/key.pub"

printf '%s namespaces="git,outpost-bundle" %s\n' "$principal" \
    "$(cut -d' ' -f1,2 "$demo/keys/demo_ed25519.pub")" >"$tmp/allowed_signers"

git_() {
    git -C "$tmp/repo" -c gpg.format=ssh -c user.signingkey="$tmp/key" \
        -c gpg.ssh.allowedSignersFile="$tmp/allowed_signers" -c pack.threads=1 "$@"
}

# Commit 1: the fleet as it is in fleet/.
mkdir "$tmp/repo"
git_ init -q -b main
cp -R "$demo/fleet/." "$tmp/repo/"
find "$tmp/repo" -path "$tmp/repo/.git" -prune -o -type f -exec chmod 644 {} + # stable modes
git_ add -A
GIT_AUTHOR_DATE="2026-11-01T10:00:00Z" GIT_COMMITTER_DATE="2026-11-01T10:00:00Z" \
    git_ commit -q -S -m "fleet: kiosk role, motd, legacy autostart removed"
git_ verify-commit main 2>/dev/null || { echo "make-bundle.sh: commit 1 does not verify" >&2; exit 1; }
first=$(git_ rev-parse main)
git_ bundle create -q "$tmp/site.bundle" main

# Commit 2: one file changes.
conf="$tmp/repo/files/kiosk/kiosk.toml"
sed -i 's/^idle_timeout = "3m"       #/idle_timeout = "2m"       #/' "$conf"
if [[ $(git_ status --porcelain) != " M files/kiosk/kiosk.toml" ]]; then
    echo "make-bundle.sh: the update did not change exactly files/kiosk/kiosk.toml:" >&2
    git_ status --porcelain >&2
    exit 1
fi
git_ add -A
GIT_AUTHOR_DATE="2026-11-02T10:00:00Z" GIT_COMMITTER_DATE="2026-11-02T10:00:00Z" \
    git_ commit -q -S -m "kiosk: back to the start page after 2 minutes idle"
git_ verify-commit main 2>/dev/null || { echo "make-bundle.sh: commit 2 does not verify" >&2; exit 1; }
second=$(git_ rev-parse main)
git_ bundle create -q "$tmp/update.bundle" "$first..main"

for b in site update; do
    ssh-keygen -q -Y sign -f "$tmp/key" -n outpost-bundle "$tmp/$b.bundle"
    ssh-keygen -q -Y verify -f "$tmp/allowed_signers" -I "$principal" -n outpost-bundle \
        -s "$tmp/$b.bundle.sig" <"$tmp/$b.bundle" >/dev/null
done

# The incremental bundle needs commit 1; check it applies on top of the full one.
git init -q --bare "$tmp/check.git"
git -C "$tmp/check.git" fetch -q "$tmp/site.bundle" main:main
git -C "$tmp/check.git" fetch -q "$tmp/update.bundle" main:main
[[ $(git -C "$tmp/check.git" rev-parse main) == "$second" ]]

for f in site.bundle site.bundle.sig update.bundle update.bundle.sig allowed_signers; do
    mv -f "$tmp/$f" "$demo/$f"
done
echo "commit 1  $first  -> site.bundle   ($(stat -c %s "$demo/site.bundle") bytes)"
echo "commit 2  $second  -> update.bundle ($(stat -c %s "$demo/update.bundle") bytes, needs commit 1)"
