#!/usr/bin/env bash
# Every check CI runs: set-up, formatting, lints, docs, and the tests (which
# mount for real, so run as root).
set -euo pipefail
# Mounts and package installs need root: as another user, go through sudo
# (keeping PATH and HOME, where cargo lives) when there is one.
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        exec sudo env PATH="$PATH" HOME="$HOME" "$0" "$@"
    fi
    echo "$(basename "$0"): run as root (mounts and package installs need it)" >&2
    exit 1
fi
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
# The engine alone, without the features the binary turns on.
cargo clippy -p fastfuse --all-targets --quiet -- -D warnings
echo "== doc";    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The three library crates must package (and build from their packages)
# as they would for crates.io; --allow-dirty only for local runs with edits.
echo "== package"
# cargo unpacks the packages it verifies into its home, under a local
# registry named after this checkout's path (registry/src/-HASH), and a
# later run from the same path reuses what it unpacked then, even when the
# sources have changed since (same version): it then verifies old code.
# So it does with what it compiled of them into the target directory (a
# registry crate of one version is taken never to change). Clear the
# sources, and verify in a target directory of its own, cleared too.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/fastfuse*-[0-9]* target/package-check
CARGO_TARGET_DIR=target/package-check \
    cargo package --quiet --allow-dirty -p fastfuse-abi -p fastfuse -p fastfuse-passthrough
echo "== test"
# The release binary serves the end-to-end tests (pjdfstest, fsx, fio).
cargo build --release --quiet -p fastfuse-cli
cargo test --workspace --release --no-fail-fast 2>&1 | tee target/test.log
# The async adaptor is behind a feature the workspace build leaves off.
echo "== async"
cargo clippy -p fastfuse --features async --all-targets --quiet -- -D warnings
# The engine's docs as docs.rs builds them (no features) and with all.
RUSTDOCFLAGS="-D warnings" cargo doc -p fastfuse --no-deps --quiet
RUSTDOCFLAGS="-D warnings" cargo doc -p fastfuse --all-features --no-deps --quiet
cargo test --release -p fastfuse --features async --test async_fs 2>&1 | tee -a target/test.log
