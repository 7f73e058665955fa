#!/usr/bin/env bash
# Build the C edge runtime (libtlcut, tlcut-edged) into build/. Pass --sanitize to also build
# build-asan/ with ASan and UBSan.
#
# Engine (TLCUT_ENGINE=openvino|opencv in the environment; default openvino): OpenVINO comes from
# the `openvino` wheel, installed with pip if it is missing (no root needed for that: a venv, or
# --user); OpenCV DNN from Debian's libopencv-dnn-dev, for a box with Debian packages only. As
# root, the Debian packages are installed first, OpenCV's too, so the tests check both engines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
engine=${TLCUT_ENGINE:-}
case "$engine" in ""|openvino|opencv) ;; *) echo "build-c: TLCUT_ENGINE must be openvino or opencv, got '$engine'" >&2; exit 2 ;; esac
root=0; [ "$(id -u)" = 0 ] && root=1

ov_cmake() {  # the wheel's CMake package folder, or nothing
  "$PY" -c 'import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), "cmake"))' 2>/dev/null || true
}
ov_dir=""
if [ "$engine" != opencv ] && command -v "$PY" >/dev/null; then
  ov_dir=$(ov_cmake)
  if [ -z "$ov_dir" ]; then
    echo "build-c: installing the openvino wheel (the C edge's engine) with pip" >&2
    "$PY" -m pip install -q 'openvino>=2024.0' >&2 || "$PY" -m pip install -q --user 'openvino>=2024.0' >&2 || true
    ov_dir=$(ov_cmake)
  fi
  [ -f "$ov_dir/OpenVINOConfig.cmake" ] || ov_dir=""
fi
if [ -z "$ov_dir" ] && [ "$engine" = openvino ]; then
  echo "build-c: TLCUT_ENGINE=openvino, but '$PY -m pip install openvino' did not give a usable wheel" >&2
  exit 2
fi
if [ -z "$ov_dir" ] && [ -z "$engine" ]; then
  echo "build-c: no openvino wheel; building with OpenCV DNN (opset-12 bundles, float32 only)" >&2
  engine=opencv
fi

pkgs=""
command -v cmake >/dev/null || pkgs="$pkgs cmake"
command -v g++ >/dev/null || pkgs="$pkgs g++"
command -v pkg-config >/dev/null || pkgs="$pkgs pkg-config"
[ -f /usr/include/zmq.h ] || pkgs="$pkgs libzmq3-dev"
[ -f /usr/include/nlohmann/json.hpp ] || pkgs="$pkgs nlohmann-json3-dev"
# JPEG requests (encoding 4); optional: without it the edge refuses them with ERROR 5
[ -f /usr/include/turbojpeg.h ] || [ $root = 0 ] || pkgs="$pkgs libturbojpeg0-dev"
# int8+zstd requests (encoding 5); optional likewise: without it the edge refuses them with ERROR 5
[ -f /usr/include/zstd.h ] || [ $root = 0 ] || pkgs="$pkgs libzstd-dev"
if [ ! -f /usr/include/opencv4/opencv2/dnn.hpp ] && { [ "$engine" = opencv ] || [ $root = 1 ]; }; then
  pkgs="$pkgs libopencv-dnn-dev"
fi
if [ -n "$pkgs" ]; then
  if [ $root = 1 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "build-c: missing Debian packages:$pkgs (install them as root)" >&2
    exit 2
  fi
fi

args=(-DTLCUT_ENGINE="$engine")
[ -n "$ov_dir" ] && args+=(-DOpenVINO_DIR="$ov_dir")
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "${args[@]}" >/dev/null
cmake --build build -j"$(nproc)"
if [ "${1:-}" = "--sanitize" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTLCUT_SANITIZE=ON "${args[@]}" >/dev/null
  cmake --build build-asan -j"$(nproc)"
fi
