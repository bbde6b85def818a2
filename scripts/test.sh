#!/usr/bin/env bash
# Every check CI runs: set-up, formatting, lints, docs, and the tests (which
# mount for real, so run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== doc";    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== test"
# The release binary serves the end-to-end tests (pjdfstest, fsx, fio).
cargo build --release --quiet -p fastfuse-cli
cargo test --workspace --release --no-fail-fast 2>&1 | tee target/test.log
