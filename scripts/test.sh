#!/usr/bin/env bash
# Install tlcut with everything its tests use, build the C edge (also with ASan/UBSan), then run
# the C tests (ctest) and the Python tests (pytest). The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# A user outside any virtual environment (Debian's python3 refuses user pip installs, PEP 668)
# gets the project's .venv, made here once, as the README's main command makes it.
if [ -z "${PYTHON:-}" ] && [ "$(id -u)" != 0 ] && "$PY" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)'; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"  # activated, so CMake's Python is this one too
  PY="$VIRTUAL_ENV/bin/python"
  export PYTHON="$PY"
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # iproute2 (ip, tc) for the testbed tests, tcpdump for the link-capture test
  missing=""
  command -v ip >/dev/null && command -v tc >/dev/null || missing="$missing iproute2"
  command -v tcpdump >/dev/null || missing="$missing tcpdump"
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
"$PY" -m pip install -q -e '.[all]'
# Triton's tests need a real tritonserver: nvidia-pytriton's, whose Python backend wants numpy<2,
# so it lives in its own venv (TLCUT_TRITON_PYTHON); the device side needs only tritonclient (in [test]).
if [ -z "${TLCUT_TRITON_PYTHON:-}" ]; then
  if { [ -x .venv-triton/bin/python ] || "$PY" -m venv .venv-triton; } \
     && .venv-triton/bin/python -m pip install -q nvidia-pytriton 'numpy<2' -e .; then
    export TLCUT_TRITON_PYTHON="$PWD/.venv-triton/bin/python"
  else
    echo "test.sh: Triton could not be installed; its tests will skip and say why" >&2
  fi
fi
bash scripts/build-c.sh --sanitize
(cd build && ctest --output-on-failure -E integration)      # framing, validation, the C example
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure)  # all C tests under ASan+UBSan
export TLCUT_EDGED="$PWD/build/tlcut-edged"
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
