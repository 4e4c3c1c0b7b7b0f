#!/usr/bin/env bash
# Fuzzing as CI runs it (docs/SECURITY.md): every cargo-fuzz target in fuzz/ for
# FUZZ_SECS (15 s) from its checked-in seeds and the corpus kept in the target
# directory; a crash, a hang (10 s an input) or an out-of-memory fails. The nightly
# toolchain and cargo-fuzz (pinned) are installed when missing. One build serves every
# target: without a sanitizer (`-s none`), since the code fuzzed is safe Rust and
# AddressSanitizer would about double the build and slow every run for nothing it could
# find there; with debug assertions (`-a`), so an arithmetic overflow fails the run as it
# would fail a test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_secs="${FUZZ_SECS:-15}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.2$'; then
  cargo install --locked cargo-fuzz@0.13.2
fi
fuzz_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/fuzz"
corpus_root="$fuzz_dir/corpus"
cd fuzz
cargo +nightly fuzz build -s none -a --target-dir "$fuzz_dir"
for t in $(cargo +nightly fuzz list); do
  mkdir -p "$corpus_root/$t"
  log="$corpus_root/$t.log"
  if ! cargo +nightly fuzz run -s none -a --target-dir "$fuzz_dir" "$t" \
    "$corpus_root/$t" "seeds/$t" -- \
    -max_total_time="$fuzz_secs" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units' "$log" | sed "s/^/fuzz $t: /"
done
