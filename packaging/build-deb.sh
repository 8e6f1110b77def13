#!/usr/bin/env bash
# Builds the Debian package into target/debian/: the release binary, the man pages and shell
# completions generated from the current CLI (never written by hand), then `cargo deb`.
# Extra arguments go to cargo deb (e.g. --deb-version 0.1.0-2, --no-build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo-deb >/dev/null || {
    echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 2
}
cargo run --quiet --locked --example gen-docs -- target/packaging >/dev/null
cargo deb --locked "$@"
