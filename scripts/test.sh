#!/usr/bin/env bash
# The whole test suite: starts Redis and NATS if needed, checks formatting
# and lints, then runs every test (unit, integration, doc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast --lib --bins --tests
fi
cargo test --locked --doc
