#!/bin/bash
# Runs every cargo-fuzz target for SECONDS each (default 60). Not part of CI.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain, RUSTC_BOOTSTRAP=1 lets
# it pass its -Z flags, and --sanitizer none avoids needing a nightly std.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# Seed the disk and volume corpora with an image of every format (fuzz/seed.sh).
./seed.sh
for t in $(cargo fuzz list); do
  echo "== $t ($SECS s)"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" -- -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 2>&1 | tail -3
done
