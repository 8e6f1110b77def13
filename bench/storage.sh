#!/usr/bin/env bash
# Benchmark: does the state stay bounded and the hot path flat as imports pile up?
#
#   bench/storage.sh [WORKDIR]
#
# Part 1, many incremental imports: a small fleet repository (outpost.toml and FILES files);
# IMPORTS signed commits, each changing one file, each shipped as a signed incremental bundle
# (previous..main). Every bundle is imported and applied one by one, as a host taking one
# stick a day would. After 1, 100 and 1000 imports (the checkpoints that IMPORTS reaches):
#   * the state size: outpost.db, objects/ and its pack count, the bundle cache;
#   * the small-change apply: wall time of the `outpost apply` deploying that import;
#   * the no-op apply: median wall time of RUNS more applies with nothing to do;
#   * bytes written per no-op apply: write_bytes of /proc/<shell>/io around one apply (the
#     kernel adds a reaped child's I/O to its parent), and wchar, what it handed to write(2).
#   Goal: flat (the numbers at 1000 imports close to those at 100).
# Part 2, `outpost gc` on the benchmark repository of bench/import.sh (COMMITS, FILES; ~100 MB
# packed by default): its full bundle imported, then BIG_INCREMENTS signed incremental bundles
# (one file each; the automatic geometric repack runs as they arrive), then `outpost gc` timed,
# with the pack count and object store size before and after, and `git fsck` over the result.
#
# Environment:
#   IMPORTS=1000 FILES_SMALL=50  part 1
#   COMMITS=5000 FILES=20000     part 2's repository (see bench/import.sh); SKIP_GC=1 skips part 2
#   BIG_INCREMENTS=20            incremental bundles on top of part 2's full bundle
#   RUNS=5                       no-op applies timed per checkpoint (median reported)
#   OUTPOST=path                 use this binary instead of building target/release/outpost
#   NO_BUILD=1                   do not run cargo; use target/release/outpost as it is
#
# WORKDIR defaults to a new `mktemp -d` under /tmp; pass the same one again to reuse part 2's
# generated repository. It must be on a disk (not tmpfs) for write_bytes to mean anything.
set -euo pipefail

IMPORTS=${IMPORTS:-1000}
FILES_SMALL=${FILES_SMALL:-50}
COMMITS=${COMMITS:-5000}
FILES=${FILES:-20000}
BIG_INCREMENTS=${BIG_INCREMENTS:-20}
RUNS=${RUNS:-5}
SKIP_GC=${SKIP_GC:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
name=storage.sh
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

[[ $IMPORTS =~ ^[1-9][0-9]*$ ]] || die "IMPORTS must be a positive integer (got '$IMPORTS')"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"
for tool in git ssh-keygen awk du python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

find_outpost git
work_dir "$@"
run="$work/storage"
rm -rf "$run"
mkdir -p "$run"

export GIT_AUTHOR_NAME="Fleet" GIT_AUTHOR_EMAIL="fleet@example.com"
export GIT_COMMITTER_NAME="Fleet" GIT_COMMITTER_EMAIL="fleet@example.com"

# ---- part 1: a small repository and IMPORTS incremental bundles ---------------------------------
log "part 1: $IMPORTS signed incremental bundles of a $FILES_SMALL-file repository"
ssh-keygen -q -t ed25519 -N "" -C fleet@example.com -f "$run/fleet.key"
printf 'fleet@example.com namespaces="git,outpost-bundle" %s\n' \
    "$(cut -d' ' -f1,2 "$run/fleet.key.pub")" >"$run/allowed_signers"
repo="$run/repo"
git init -q -b main "$repo"
mkdir -p "$repo/files"
for i in $(seq "$FILES_SMALL"); do
    printf 'file %d\n%s\n' "$i" "$(head -c 600 /dev/zero | tr '\0' x)" >"$repo/files/f$i.conf"
done
printf '[[tree]]\npath = "/etc/app"\nsource = "files"\n' >"$repo/outpost.toml"
sign() { git -C "$repo" -c gpg.format=ssh -c user.signingkey="$run/fleet.key" commit -q -S "$@"; }
when=1790000000
commit() {
    when=$((when + 3600))
    GIT_AUTHOR_DATE="@$when +0000" GIT_COMMITTER_DATE="@$when +0000" sign "$@"
}
git -C "$repo" add -A
commit -m "start"
mkdir -p "$run/bundles"
git -C "$repo" bundle create -q "$run/bundles/0000.bundle" main
ssh-keygen -q -Y sign -f "$run/fleet.key" -n outpost-bundle "$run/bundles/0000.bundle"
t0=$(now_ns)
for n in $(seq "$IMPORTS"); do
    f=$(((n % FILES_SMALL) + 1))
    printf 'file %d changed %d\n' "$f" "$n" >>"$repo/files/f$f.conf"
    git -C "$repo" add -A
    commit -m "change $n"
    b=$(printf '%s/bundles/%04d.bundle' "$run" "$n")
    git -C "$repo" bundle create -q "$b" main~1..main
    ssh-keygen -q -Y sign -f "$run/fleet.key" -n outpost-bundle "$b"
done
log "bundles made in $(secs "$t0" "$(now_ns)") s"

mkdir -p "$run/host"
cat >"$run/config.toml" <<'EOF'
[host]
name = "bench-host"
root = "host"

[state]
dir = "state"

[apply]
set_owner = false
allowed_paths = ["/etc"]

[trust]
allowed_signers = "allowed_signers"
EOF
cfg=(--config "$run/config.toml")

# write_bytes and wchar of one command, added to this shell's counters when it is reaped.
io_of() {
    bash -c '
        read_io() { awk -v k="$1" "\$1 == k\":\" { print \$2 }" /proc/$$/io; }
        wb=$(read_io write_bytes); wc=$(read_io wchar)
        "$@" >/dev/null 2>&1
        echo $(( $(read_io write_bytes) - wb )) $(( $(read_io wchar) - wc ))
    ' _ "$@"
}

checkpoint() {
    local n=$1 change=$2
    sync
    sleep 0.3 # past the stat cache's racy window: the no-op applies below are the hot path
    "$outpost" "${cfg[@]}" apply >/dev/null
    local walls=() io
    for _ in $(seq "$RUNS"); do
        timed noop "$outpost" "${cfg[@]}" apply
        walls+=("$wall")
    done
    sync
    io=$(io_of "$outpost" "${cfg[@]}" apply)
    local db objects packs cache
    db=$(stat -c %s "$run/state/outpost.db")
    objects=$(du -sb "$run/state/objects" | cut -f1)
    packs=$(find "$run/state/objects/objects/pack" -name '*.pack' | wc -l)
    cache=$("$outpost" "${cfg[@]}" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["storage"]
print(s["cached_bundles"], s["cached_bundle_bytes"], s["deployments"])')
    printf '  %6s %10s %10s %6s %22s %10s %10s %12s %10s\n' "$n" "$(mb "$db")" "$(mb "$objects")" \
        "$packs" "$cache" "$change" "$(median "${walls[@]}")" "${io% *}" "${io#* }" >>"$run/table"
}

: >"$run/table"
log "importing and applying one by one"
t0=$(now_ns)
timed import0 "$outpost" "${cfg[@]}" import "$run/bundles/0000.bundle"
timed apply0 "$outpost" "${cfg[@]}" apply
for n in $(seq "$IMPORTS"); do
    b=$(printf '%s/bundles/%04d.bundle' "$run" "$n")
    timed import "$outpost" "${cfg[@]}" import "$b"
    timed apply "$outpost" "${cfg[@]}" apply
    change=$wall
    case $n in
    1 | 10 | 100 | 1000 | 10000) checkpoint "$n" "$change" ;;
    esac
done
[[ $IMPORTS == 1 || $IMPORTS == 10 || $IMPORTS == 100 || $IMPORTS == 1000 ]] || checkpoint "$IMPORTS" "$change"
log "imports and applies done in $(secs "$t0" "$(now_ns)") s"
git -c core.bare=true --git-dir "$run/state/objects" fsck --no-dangling --no-progress >"$run/fsck.out" 2>&1 ||
    { cat "$run/fsck.out" >&2; die "git fsck failed on part 1's object store"; }

# ---- part 2: gc of the benchmark repository ------------------------------------------------------
gc_report=""
if [[ $SKIP_GC != 1 ]]; then
    log "part 2: the bench/import.sh repository (COMMITS=$COMMITS FILES=$FILES)"
    COMMITS=$COMMITS FILES=$FILES RUNS=1 SKIP_OUTPOST=1 "$here/import.sh" "$work/import" >"$run/import.log"
    cache=$(find "$work/import" -maxdepth 1 -name "repo-c$COMMITS-f$FILES-*" | head -n 1)
    [[ -f $cache/.complete ]] || die "bench/import.sh did not leave a repository in $work/import"
    big="$run/big"
    rm -rf "$big"
    mkdir -p "$big/host" "$big/bundles"
    git clone -q --bare "$cache/repo" "$big/repo.git"
    cp "$cache/allowed_signers" "$big/allowed_signers"
    sed -e 's/^name = .*/name = "bench-big"/' "$run/config.toml" >"$big/config.toml"
    printf '\n[source]\nmax_bundle_size = "2GiB"\n' >>"$big/config.toml"
    key="$cache/keys/fleet_ed25519"
    when=$(($(git --git-dir "$big/repo.git" log -1 --format=%ct main) + 3600))
    for n in $(seq "$BIG_INCREMENTS"); do
        blob=$(printf 'increment %d\n' "$n" | git --git-dir "$big/repo.git" hash-object -w --stdin)
        GIT_INDEX_FILE="$big/index" git --git-dir "$big/repo.git" read-tree main
        GIT_INDEX_FILE="$big/index" git --git-dir "$big/repo.git" update-index --add --cacheinfo "100644,$blob,bench-increment-$n"
        tree=$(GIT_INDEX_FILE="$big/index" git --git-dir "$big/repo.git" write-tree)
        when=$((when + 3600))
        c=$(GIT_AUTHOR_DATE="@$when +0000" GIT_COMMITTER_DATE="@$when +0000" \
            git --git-dir "$big/repo.git" -c gpg.format=ssh -c user.signingkey="$key" \
            commit-tree -S -p main -m "increment $n" "$tree")
        git --git-dir "$big/repo.git" update-ref refs/heads/main "$c"
        git --git-dir "$big/repo.git" bundle create -q "$big/bundles/$n.bundle" main~1..main
        ssh-keygen -q -Y sign -f "$key" -n outpost-bundle "$big/bundles/$n.bundle"
    done
    run_saved=$run
    run=$big
    timed big-import "$outpost" --config "$big/config.toml" import "$cache/site.bundle"
    full_import=$wall
    t0=$(now_ns)
    for n in $(seq "$BIG_INCREMENTS"); do
        timed big-inc "$outpost" --config "$big/config.toml" import "$big/bundles/$n.bundle"
    done
    inc_total=$(secs "$t0" "$(now_ns)")
    packs_before=$(find "$big/state/objects/objects/pack" -name '*.pack' | wc -l)
    objects_before=$(du -sb "$big/state/objects" | cut -f1)
    TIMED_SYNC=1 timed big-gc "$outpost" --config "$big/config.toml" gc
    gc_wall=$wall gc_rss=$rss
    packs_after=$(find "$big/state/objects/objects/pack" -name '*.pack' | wc -l)
    objects_after=$(du -sb "$big/state/objects" | cut -f1)
    git --git-dir "$big/state/objects" fsck --no-dangling --no-progress >"$big/fsck.out" 2>&1 ||
        { cat "$big/fsck.out" >&2; die "git fsck failed after gc of the benchmark repository"; }
    run=$run_saved
    gc_report=$(
        printf '  full bundle       %s, imported in %s s\n' "$(mb "$(stat -c %s "$cache/site.bundle")")" "$full_import"
        printf '  %s incremental imports (automatic repack included): %s s\n' "$BIG_INCREMENTS" "$inc_total"
        printf '  outpost gc        %s s, peak RSS %s MiB; %s packs, %s -> %s pack, %s; git fsck clean\n' \
            "$gc_wall" "$((gc_rss / 1024))" "$packs_before" "$(mb "$objects_before")" "$packs_after" "$(mb "$objects_after")"
    )
fi

# ---- report --------------------------------------------------------------------------------------
echo
echo "outpost storage benchmark  (part 1: $IMPORTS incremental imports of a $FILES_SMALL-file repository)"
echo "  work dir  $work"
echo
printf '  %6s %10s %10s %6s %22s %10s %10s %12s %10s\n' imports outpost.db objects/ packs \
    "bundles/bytes/deploys" "change s" "no-op s" "no-op wbytes" "no-op wchar"
cat "$run/table"
echo
echo "  change s: the apply deploying that import; no-op s: median of $RUNS applies with nothing to do;"
echo "  wbytes: bytes the no-op apply sent to the block layer (/proc io write_bytes); wchar: bytes"
echo "  it passed to write(2). git fsck of the object store after all imports: clean."
if [[ -n $gc_report ]]; then
    echo
    echo "part 2: gc of the bench/import.sh repository (COMMITS=$COMMITS FILES=$FILES)"
    echo "$gc_report"
fi
