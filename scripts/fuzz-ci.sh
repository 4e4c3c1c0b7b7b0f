#!/usr/bin/env bash
# Fuzzing as CI runs it (docs/SECURITY.md): every libFuzzer target in fuzz/ for
# FUZZ_SECS (15 s) from its checked-in seeds and the corpus kept in the target
# directory; a crash, a hang (10 s an input) or an out-of-memory fails.
#
#   scripts/fuzz-ci.sh         build, then run every target
#   scripts/fuzz-ci.sh build   build only (CI starts it early, at the lowest priority)
#   scripts/fuzz-ci.sh run     run every target that `build` built
#
# The targets are built as `cargo fuzz build -s none -a` builds them (the same
# instrumentation flags: libFuzzer's coverage counters, `--cfg fuzzing`, debug
# assertions so an arithmetic overflow fails as it would fail a test), but by cargo
# itself on the stable toolchain: without a sanitizer nothing needs nightly, and CI
# does not spend minutes compiling cargo-fuzz. By hand, `cargo +nightly fuzz run`
# works on the same crate (docs/SECURITY.md). No sanitizer, since the code fuzzed is
# safe Rust and AddressSanitizer would about double the build and slow every run for
# nothing it could find there.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
case "$mode" in all|build|run) ;; *) echo "fuzz-ci.sh: build, run or nothing" >&2; exit 2 ;; esac
fuzz_secs="${FUZZ_SECS:-15}"
fuzz_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/fuzz"
triple="$(rustc -vV | sed -n 's/^host: //p')"
corpus_root="$fuzz_dir/corpus"

if [ "$mode" != run ]; then
  started=$SECONDS
  # An explicit --target keeps build scripts and proc macros uninstrumented.
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth --cfg fuzzing -Clink-dead-code -Cdebug-assertions" \
    cargo build --locked --manifest-path fuzz/Cargo.toml --release --bins \
    --target "$triple" --target-dir "$fuzz_dir"
  echo "fuzz: built in $((SECONDS - started)) s"
fi
[ "$mode" = build ] && exit 0

# One target's run; its log is kept beside the corpus.
run_target() {
  local t=$1 log="$corpus_root/$1.log"
  mkdir -p "$corpus_root/$t" "fuzz/artifacts/$t"
  if ! "$fuzz_dir/$triple/release/$t" "$corpus_root/$t" "fuzz/seeds/$t" \
    -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$fuzz_secs" -timeout=10 \
    -rss_limit_mb=1024 -malloc_limit_mb=512 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (input in fuzz/artifacts/$t/)" >&2
    return 1
  fi
  # A build without the coverage counters would "pass" while exploring nothing.
  if ! grep -Eq 'INFO: Loaded [0-9]+ modules +\([1-9][0-9]* inline 8-bit counters\)' "$log"; then
    head -n 20 "$log" >&2
    echo "fuzz target $t is not instrumented (no coverage counters): the build flags are wrong" >&2
    return 1
  fi
}

# Two targets at a time (one core each): the stages CI runs beside them mostly wait.
targets=()
for src in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$src" .rs)"); done
failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do
    run_target "$t" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || exit 1
done
for t in "${targets[@]}"; do
  grep -E '^stat::number_of_executed_units' "$corpus_root/$t.log" | sed "s/^/fuzz $t: /"
done
