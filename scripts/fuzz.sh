#!/usr/bin/env bash
# Fuzzing (libFuzzer through cargo-fuzz, on stable Rust: no sanitizer, so
# `-s none`; a panic or a failed assertion is a finding):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# runs each target (default: all of fuzz/fuzz_targets) for SECONDS (default
# 60), starting from the committed seeds in fuzz/corpus/TARGET and keeping
# what libFuzzer finds in a scratch corpus, so the committed one stays the
# seeds. A crash stops with a non-zero exit; the input is in
# fuzz/artifacts/TARGET/ (replay: cargo fuzz run TARGET -s none FILE).
# Installs cargo-fuzz (crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build -s none
for t in "${targets[@]}"; do
    scratch="$(mktemp -d)"
    echo "fuzz: $t for ${seconds} s"
    if ! cargo fuzz run "$t" -s none "$scratch" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 \
        >"$scratch.log" 2>&1; then
        tail -40 "$scratch.log" >&2
        echo "fuzz: $t found a crash (see fuzz/artifacts/$t/)" >&2
        rm -rf "$scratch"
        exit 1
    fi
    grep -E "^Done|stat::number_of_executed_units|stat::new_units_added" "$scratch.log" | sed "s/^/fuzz: $t: /"
    rm -rf "$scratch" "$scratch.log"
done
