#!/usr/bin/env bash
# Fuzz the C frame parser with libFuzzer (clang) for SECONDS (default 300), starting from the
# corpus in runtime/c/fuzz/corpus (the protocol's test vectors). Writes benchmarks/results/fuzz.md.
#   bash benchmarks/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DTLCUT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target fuzz_frame -j2 >/dev/null
work=$(mktemp -d)
cp runtime/c/fuzz/corpus/* "$work"/
start=$(date -u +%FT%TZ)
set +e
./build-fuzz/fuzz_frame -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build-fuzz/ "$work" >build-fuzz/fuzz.log 2>&1
rc=$?
set -e
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' build-fuzz/fuzz.log | grep -o '[0-9]*$' || echo "?")
cov=$(grep -o 'cov: [0-9]*' build-fuzz/fuzz.log | tail -1 | grep -o '[0-9]*' || echo "?")
crashes=$(find build-fuzz -maxdepth 1 \( -name "crash-*" -o -name "leak-*" -o -name "timeout-*" \) | wc -l)
mkdir -p benchmarks/results
cat > benchmarks/results/fuzz.md <<MD
# Fuzzing the C frame parser

Command: \`bash benchmarks/fuzz.sh $secs\`  
Started: $start; clang $(clang --version | head -1 | grep -o '[0-9][0-9.]*' | head -1), libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer.  
Target: \`runtime/c/fuzz/fuzz_frame.c\` (tlc_header_parse, tlc_frame_check, and pack-after-parse must reproduce the parse), seeded with the $(ls runtime/c/fuzz/corpus | wc -l) protocol vectors.

| time limit | executions | edges covered | crashes, leaks or timeouts | libFuzzer exit code |
|---:|---:|---:|---:|---:|
| ${secs} s | ${runs} | ${cov} | ${crashes} | ${rc} |
MD
cat benchmarks/results/fuzz.md
[ "$rc" = 0 ] && [ "$crashes" = 0 ]
