#!/usr/bin/env bash
# Build the C edge runtime (libtlcut, tlcut-edged) into build/, installing its Debian packages
# first when run as root. Pass --sanitize to also build build-asan/ with ASan and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=""
command -v cmake >/dev/null || pkgs="$pkgs cmake"
command -v g++ >/dev/null || pkgs="$pkgs g++"
[ -f /usr/include/zmq.h ] || pkgs="$pkgs libzmq3-dev"
[ -f /usr/include/opencv4/opencv2/dnn.hpp ] || pkgs="$pkgs libopencv-dnn-dev"
[ -f /usr/include/nlohmann/json.hpp ] || pkgs="$pkgs nlohmann-json3-dev"
command -v pkg-config >/dev/null || pkgs="$pkgs pkg-config"
if [ -n "$pkgs" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "build-c: missing Debian packages:$pkgs (install them as root)" >&2
    exit 2
  fi
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
if [ "${1:-}" = "--sanitize" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTLCUT_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$(nproc)"
fi
