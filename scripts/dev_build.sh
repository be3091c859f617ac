#!/usr/bin/env bash
# Developer build: compiles drift._C into build/<name> and copies it into python/drift/, so
# that `PYTHONPATH=python pytest` runs against the working tree without reinstalling.
# Usage: scripts/dev_build.sh [build-name] [extra cmake -D args...]  (DRIFT_CUDA=OFF default)
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-dev}"; shift || true
py="${PYTHON:-python}"
cmake -S . -B "build/$name" -G Ninja -DDRIFT_CUDA="${DRIFT_CUDA:-OFF}" \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$py")" "$@" >/dev/null
cmake --build "build/$name" -j "${JOBS:-2}"
# Copy then rename: replacing the .so in place would crash processes that have it mapped.
for so in "build/$name"/_C*.so; do
  cp "$so" "python/drift/.$(basename "$so").tmp"
  mv -f "python/drift/.$(basename "$so").tmp" "python/drift/$(basename "$so")"
done
