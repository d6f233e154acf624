#!/usr/bin/env bash
# Runs the cargo-fuzz targets (libFuzzer), one after the other, on one core each.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60; the documented long session used 900 (fuzz/README.md)
#   TARGET              decode, data, classify, headers (default: all four)
#
# Needs cargo-fuzz (installed into the git-ignored .tools/ when absent) and builds with the
# stable toolchain's nightly features unlocked (RUSTC_BOOTSTRAP=1). The seed corpus is
# regenerated from the project's example events (fuzz/seed.py); what libFuzzer finds is kept
# in fuzz/corpus/<target>/, crashes in fuzz/artifacts/<target>/, logs in fuzz/logs/.
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(dirname "$FUZZ")"
SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(decode data classify headers)

export RUSTC_BOOTSTRAP=1
export PATH="$ROOT/.tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked --root "$ROOT/.tools" cargo-fuzz
fi

cd "$FUZZ"
# Start from the workspace's lock file, so the fuzzed code is built from the same versions.
[[ -f Cargo.lock ]] || cp "$ROOT/Cargo.lock" Cargo.lock
python3 seed.py
mkdir -p logs
cargo fuzz build -O --debug-assertions

status=0
for target in "${TARGETS[@]}"; do
  echo "== $target: ${SECONDS_PER_TARGET}s"
  if ! cargo fuzz run -O --debug-assertions "$target" "corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -dict=keptn.dict -max_len=16384 \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"logs/$target.log" 2>&1; then
    echo "   $target FAILED: see fuzz/logs/$target.log and fuzz/artifacts/$target/"
    status=1
  fi
  grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
    "logs/$target.log" | sed 's/^/   /' || true
  echo "   corpus: $(find "corpus/$target" -type f | wc -l) inputs"
done
exit "$status"
