#!/usr/bin/env bash
# Fuzz the C edge with libFuzzer (clang), AddressSanitizer and UndefinedBehaviorSanitizer, for
# SECONDS (default 300) per target, and write benchmarks/results/fuzz.md:
#   fuzz_frame  the frame parser and checker, seeded with runtime/c/fuzz/corpus (the protocol's
#               test vectors);
#   fuzz_edge   the whole request path (tlc_edge_handle_from) on the committed test bundle, seeded
#               with runtime/c/fuzz/corpus_edge (well-formed requests, from
#               scripts/make_c_test_bundle.py) and the protocol vectors behind a mode byte.
#   bash benchmarks/fuzz.sh [SECONDS]
# Needs clang with libFuzzer (Debian: apt-get install clang) and the C edge's build packages.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
jobs=$(nproc); [ "$jobs" -gt 2 ] && jobs=2
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DTLCUT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target fuzz_frame fuzz_edge -j"$jobs" >/dev/null
export OPENCV_FOR_THREADS_NUM=1  # one engine thread: steadier executions per second
export ASAN_OPTIONS=detect_leaks=1
started=$(date -u +%FT%TZ)
rows="" findings="" status=0 depth=""
for target in fuzz_frame fuzz_edge; do
  work=build-fuzz/corpus-$target out=build-fuzz/artifacts-$target
  rm -rf "$work" "$out"
  mkdir -p "$work" "$out"
  if [ "$target" = fuzz_frame ]; then
    cp runtime/c/fuzz/corpus/* "$work"/
  else
    cp runtime/c/fuzz/corpus_edge/* "$work"/
    for f in runtime/c/fuzz/corpus/*; do  # mode byte 0: no peer, sent once, a whole header
      { printf '\000'; cat "$f"; } >"$work/vector-$(basename "$f")"
    done
  fi
  seeds=$(ls "$work" | wc -l)
  set +e
  "./build-fuzz/$target" -max_total_time="$secs" -timeout=10 -print_final_stats=1 -artifact_prefix="$out/" "$work" \
    >"build-fuzz/$target.log" 2>&1
  rc=$?
  set -e
  log="build-fuzz/$target.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'exec/s: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  units=$(ls "$work" | wc -l)
  crashes=$(find "$out" -type f | wc -l)
  if [ "$target" = fuzz_edge ]; then
    depth=$(grep -m1 -o 'fuzz_edge replies: .*' "$log" || echo "fuzz_edge replies: (not reported)")
  fi
  rows="$rows| \`$target\` | $seeds | ${secs} s | $runs | $rate | $cov | $ft | $units | $crashes | $rc |
"
  if [ "$crashes" != 0 ] || [ "$rc" != 0 ]; then
    status=1
    summary=$(grep -m1 -E 'SUMMARY|ERROR: libFuzzer|deadly signal' "$log" || echo "exit code $rc")
    findings="$findings- \`$target\`: $(find "$out" -type f -printf '%f ' ) ($summary); reproduce with \`./build-fuzz/$target FILE\`
"
  fi
done
[ -n "$findings" ] || findings="- None: no crash, sanitizer report, leak or timeout in either target.
"
mkdir -p benchmarks/results
cat > benchmarks/results/fuzz.md <<MD
# Fuzzing the C edge

Command: \`bash benchmarks/fuzz.sh $secs\` (each target for $secs s, one after the other)  
Started: $started  
Machine: $(lscpu | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores  
Compiler: $(clang --version | head -1); libFuzzer with AddressSanitizer (leak detection on) and UndefinedBehaviorSanitizer, the whole library instrumented (\`-DTLCUT_FUZZ=ON\`)

Targets:

- \`runtime/c/fuzz/fuzz_frame.c\`: tlc_header_parse and tlc_frame_check on arbitrary bytes, and
  pack-after-parse must reproduce the parse. Seeds: the protocol vectors (\`runtime/c/fuzz/corpus\`).
- \`runtime/c/fuzz/fuzz_edge.c\`: the whole request path, \`tlc_edge_handle_from\` (size limit,
  framing, replay table, cut lookup, float16/int8 decoding, shape checks, OpenCV inference,
  reply) on \`runtime/c/tests/data/bundle\` serving cuts 0 and 1 with and without the TL and the
  whole model; a mode byte picks a fresh peer, a second send (which must be refused as a replay
  where the first got past the replay check) and truncated headers. Every reply must parse, be a
  RESULT, ERROR or PONG with a consistent payload length, and carry the request's id, cut and TL
  flag. Seeds: well-formed requests (\`runtime/c/fuzz/corpus_edge\`) and the protocol vectors.

| target | seeds | time limit | executions | exec/s (last) | edges covered | features | corpus after | crashes, leaks or timeouts | libFuzzer exit code |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$rows
How deep \`fuzz_edge\` went, in replies (an input sent twice gets two): ${depth#fuzz_edge replies: }. A result is a request
that passed every check and ran through OpenCV; the error codes are those of docs/protocol.md (1 bad frame, 2 version, 3 type,
4 wrong cut, 5 wrong tensor, 6 too large, 7 internal, 9 replay).

Findings:

$findings
MD
cat benchmarks/results/fuzz.md
exit $status
