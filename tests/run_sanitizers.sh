#!/usr/bin/env bash
# Run drift's native-code tests under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds drift._C with -DDRIFT_SANITIZE=ON -DDRIFT_CUDA=OFF into build/asan (never copied into
# python/drift/), stages a private copy of the Python package with that .so in a temporary
# directory, and runs pytest on it with the g++ sanitizer runtimes preloaded (the Python
# interpreter itself is not instrumented, so the runtimes must be loaded first).
#
# Usage: tests/run_sanitizers.sh [pytest args...]   (paths relative to the repository root)
#   default args: tests/test_lcs.py, plus tests/test_oal.py, tests/test_token_logps.py,
#   tests/test_reliability.py and tests/test_fuzz.py when they exist (the fuzz run is a slice:
#   DRIFT_FUZZ_CASES defaults to 2000 here; its subprocesses inherit the sanitizer runtimes and
#   the staged package). Env: PYTHON (default: python; its directory goes first on PATH, so a venv's
#   cmake/ninja are used), CXX (default: g++), JOBS (default: 2), BUILD_DIR (default:
#   build/asan), SOURCE_DIR (default: the repository root; point it at a scratch copy of the
#   sources, e.g. one with a deliberately injected bug, to build and stage that instead).
# Exit status: non-zero on a build failure, a test failure or any sanitizer report.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="${SOURCE_DIR:-$ROOT}"
BUILD="${BUILD_DIR:-$ROOT/build/asan}"
PY="$(command -v "${PYTHON:-python}")" || { echo "run_sanitizers: no python (set PYTHON)" >&2; exit 2; }
# Build tools installed next to that python (a venv's cmake/ninja) win over the system's.
export PATH="$(dirname "$PY"):$PATH"
CXX_BIN="$(command -v "${CXX:-g++}")" || { echo "run_sanitizers: no C++ compiler (set CXX)" >&2; exit 2; }

# The runtimes must come from the compiler that built the extension.
LIBASAN="$("$CXX_BIN" -print-file-name=libasan.so)"
LIBUBSAN="$("$CXX_BIN" -print-file-name=libubsan.so)"
for lib in "$LIBASAN" "$LIBUBSAN"; do
  if [[ "$lib" != /* || ! -e "$lib" ]]; then
    echo "run_sanitizers: $CXX_BIN has no sanitizer runtime ($lib); install libasan/libubsan" >&2
    exit 2
  fi
done

echo "== building the sanitized extension in $BUILD"
cmake -S "$SRC" -B "$BUILD" -G Ninja -DDRIFT_SANITIZE=ON -DDRIFT_CUDA=OFF \
  -DCMAKE_CXX_COMPILER="$CXX_BIN" -DCMAKE_BUILD_TYPE=Debug \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$PY" >/dev/null
cmake --build "$BUILD" -j "${JOBS:-2}"
shopt -s nullglob
sos=("$BUILD"/_C*.so)
shopt -u nullglob
[[ ${#sos[@]} -eq 1 ]] || { echo "run_sanitizers: expected one _C*.so in $BUILD, found ${#sos[@]}" >&2; exit 2; }

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/drift-asan.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
# Stage the package without the working tree's (unsanitized) extension or bytecode.
cp -r "$SRC/python/drift" "$STAGE/drift"
find "$STAGE/drift" \( -name '_C*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
cp "${sos[0]}" "$STAGE/drift/"

if [[ $# -eq 0 ]]; then
  set -- "$ROOT/tests/test_lcs.py"
  for t in test_oal.py test_token_logps.py test_reliability.py test_fuzz.py; do
    [[ -f "$ROOT/tests/$t" ]] && set -- "$@" "$ROOT/tests/$t"
  done
fi

export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
export DRIFT_FUZZ_CASES="${DRIFT_FUZZ_CASES:-2000}"
export PYTHONDONTWRITEBYTECODE=1
# Leaks are off: CPython keeps interned objects and module state alive until exit by design.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
PRELOAD="$LIBASAN:$LIBUBSAN${LD_PRELOAD:+:$LD_PRELOAD}"

# A pytest plugin (-p) that refuses to run unless `drift` is the staged, sanitized copy.
cat > "$STAGE/_drift_sanitizer_guard.py" <<'EOF'
import os
import sys

import pytest


def pytest_sessionstart(session):
    import drift

    stage = os.environ["DRIFT_SANITIZER_STAGE"]
    info = drift.build_info()
    if not drift.__file__.startswith(stage + os.sep) or not info["sanitized"]:
        raise pytest.UsageError(f"run_sanitizers: imported drift from {drift.__file__} ({info}), "
                                f"not the sanitized copy staged in {stage}")
    print(f"drift (sanitized): {drift.__file__} {info}", file=sys.__stderr__, flush=True)
EOF
export DRIFT_SANITIZER_STAGE="$STAGE"

LOG="$STAGE/pytest.log"
echo "== pytest $* (ASan + UBSan preloaded)"
set +e
# --capture=sys: pytest's default fd-level capture would swallow a report printed to fd 2 by
# a process that the sanitizer then halts. PYTHONUNBUFFERED keeps the test log up to the halt.
(cd "$ROOT" && LD_PRELOAD="$PRELOAD" PYTHONUNBUFFERED=1 "$PY" -m pytest -p no:cacheprovider -p _drift_sanitizer_guard --capture=sys -q "$@") 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e

# A report also fails the run when the process survived it (a recoverable check, or a
# subprocess whose exit status a test ignored).
if grep -Eq "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$LOG"; then
  echo "run_sanitizers: FAILED - sanitizer report above (pytest exit status $rc)" >&2
  exit $(( rc == 0 ? 1 : rc ))
fi
if [[ $rc -ne 0 ]]; then
  echo "run_sanitizers: FAILED - pytest exit status $rc" >&2
  exit "$rc"
fi
echo "run_sanitizers: OK - no sanitizer reports, tests passed"
