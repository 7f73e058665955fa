#!/usr/bin/env bash
# Fuzz the C edge with libFuzzer (clang), AddressSanitizer and UndefinedBehaviorSanitizer, for
# SECONDS (default 300) per target, and write benchmarks/results/fuzz.md:
#   fuzz_frame  the frame parser and checker, seeded with runtime/c/fuzz/corpus (the protocol's
#               test vectors);
#   fuzz_edge   the whole request path (tlc_edge_handle_from) on the committed test bundle, seeded
#               with runtime/c/fuzz/corpus_edge (well-formed requests, from
#               scripts/make_c_test_bundle.py) and the protocol vectors behind a mode byte;
#   fuzz_jpeg   the JPEG path (encoding 4): the input is a JPEG, sent as a request to the test
#               bundle's whole model and decoded at the size its header declares; seeded with
#               runtime/c/fuzz/corpus_jpeg.
#   bash benchmarks/fuzz.sh [SECONDS]
# Needs clang with libFuzzer (Debian: apt-get install clang) and the C edge's build packages.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
jobs=$(nproc); [ "$jobs" -gt 2 ] && jobs=2
mkdir -p build-fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DTLCUT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >build-fuzz/cmake.log 2>&1 || { cat build-fuzz/cmake.log >&2; exit 1; }
engine=$(grep -o 'libtlcut engine: .*' build-fuzz/cmake.log | sed 's/libtlcut engine: //' || echo "?")
jpeg=$(grep -o 'JPEG requests: .*' build-fuzz/cmake.log | sed 's/JPEG requests: //' || echo "none")
targets="fuzz_frame fuzz_edge"
[ -n "$jpeg" ] && [ "$jpeg" != none ] && targets="$targets fuzz_jpeg"
cmake --build build-fuzz --target $targets -j"$jobs" >/dev/null
export OPENCV_FOR_THREADS_NUM=1  # one engine thread: steadier executions per second
export ASAN_OPTIONS=detect_leaks=1
started=$(date -u +%FT%TZ)
rows="" findings="" status=0 depth="" jdepth=""
for target in $targets; do
  work=build-fuzz/corpus-$target out=build-fuzz/artifacts-$target
  rm -rf "$work" "$out"
  mkdir -p "$work" "$out"
  if [ "$target" = fuzz_frame ]; then
    cp runtime/c/fuzz/corpus/* "$work"/
  elif [ "$target" = fuzz_jpeg ]; then
    cp runtime/c/fuzz/corpus_jpeg/* "$work"/
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
  if [ "$target" = fuzz_jpeg ]; then
    jdepth=$(grep -m1 -o 'fuzz_jpeg replies: .*' "$log" || echo "fuzz_jpeg replies: (not reported)")
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
[ -n "$findings" ] || findings="- None: no crash, sanitizer report, leak or timeout in any target.
"
jline="\`fuzz_jpeg\` was not built: libtlcut has no JPEG decoder here (libturbojpeg0-dev)."
[ -n "$jdepth" ] && jline="How deep \`fuzz_jpeg\` went: ${jdepth#fuzz_jpeg replies: }. A result is a JPEG that decoded to the whole model's
7x7 RGB input and ran; an image decoded is one decoded at the size its own header declares (up to 256x256)."
mkdir -p benchmarks/results
cat > benchmarks/results/fuzz.md <<MD
# Fuzzing the C edge

Command: \`bash benchmarks/fuzz.sh $secs\` (each target for $secs s, one after the other)  
Started: $started  
Machine: $(lscpu | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores  
Compiler: $(clang --version | head -1); libFuzzer with AddressSanitizer (leak detection on) and UndefinedBehaviorSanitizer, the whole library instrumented (\`-DTLCUT_FUZZ=ON\`)  
Engine: $engine; JPEG decoder: ${jpeg:-none} (Debian's, not instrumented)

Targets:

- \`runtime/c/fuzz/fuzz_frame.c\`: tlc_header_parse and tlc_frame_check on arbitrary bytes, and
  pack-after-parse must reproduce the parse. Seeds: the protocol vectors (\`runtime/c/fuzz/corpus\`).
- \`runtime/c/fuzz/fuzz_edge.c\`: the whole request path, \`tlc_edge_handle_from\` (size limit,
  framing, replay table, cut lookup, float16/int8/uint8/JPEG decoding, shape checks, inference
  ($engine), reply) on \`runtime/c/tests/data/bundle\` serving cuts 0 and 1 with and without the TL and the
  whole model; a mode byte picks a fresh peer, a second send (which must be refused as a replay
  where the first got past the replay check) and truncated headers. Every reply must parse, be a
  RESULT, ERROR or PONG with a consistent payload length, and carry the request's id, cut and TL
  flag. Seeds: well-formed requests (\`runtime/c/fuzz/corpus_edge\`, uint8 and JPEG ones included) and the
  protocol vectors.
- \`runtime/c/fuzz/fuzz_jpeg.cpp\`: the JPEG path (encoding 4) with the frame built around the input,
  so every mutation reaches the decoder: sent to the whole model (input [1, 3, 7, 7]), the reply must be
  a RESULT or ERROR 5, nothing else; then the header is read and, up to 256x256, the image decoded at the
  size it declares. Seeds: JPEG files (\`runtime/c/fuzz/corpus_jpeg\`: 7x7 RGB at two qualities,
  grayscale, 4:2:0, progressive, restart markers, truncated, 24x20, and a stream of tables only that libjpeg-turbo 2.1
  reads as a header of size 0x0, which this target found).

| target | seeds | time limit | executions | exec/s (last) | edges covered | features | corpus after | crashes, leaks or timeouts | libFuzzer exit code |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$rows
How deep \`fuzz_edge\` went, in replies (an input sent twice gets two): ${depth#fuzz_edge replies: }. A result is a request
that passed every check and ran through $engine; the error codes are those of docs/protocol.md (1 bad frame, 2 version, 3 type,
4 wrong cut, 5 wrong tensor, 6 too large, 7 internal, 9 replay). Its executions per second are bounded by LeakSanitizer,
not the edge: an input from a fresh peer leaves an entry in the replay table (memory that outlives the input), so libFuzzer
scans the heap for leaks after it, and with OpenVINO loaded that heap is large (\`perf\`: ~70% of the time in LSan).

$jline

Findings:

$findings
MD
cat benchmarks/results/fuzz.md
exit $status
