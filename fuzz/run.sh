#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60), JOBS at a time (default 2), on stable Rust.
# Needs cargo-fuzz: cargo install cargo-fuzz --locked
# Crashes land in fuzz/artifacts/<target>/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
targets=$(cargo fuzz list)
cargo fuzz build --sanitizer none --release
run() {
    local t=$1
    mkdir -p "corpus/$t"
    cargo fuzz run --sanitizer none --release "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 > "logs/$t.log" 2>&1
    echo "$t: $(grep -E 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}') executions, \
$(grep -Eo 'cov: [0-9]+' "logs/$t.log" | tail -1) edges, $(grep -c 'SUMMARY\|panicked' "logs/$t.log" || true) crashes"
}
mkdir -p logs
running=0
for t in $targets; do
    run "$t" &
    running=$((running + 1))
    if [ "$running" -ge "${JOBS:-2}" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
