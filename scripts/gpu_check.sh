#!/usr/bin/env bash
# The offline GPU check (see docs/GPU.md): from a fresh checkout on a GPU machine without network,
#   scripts/gpu_check.sh [--bundle build/gpu-bundle] [--out build/gpu-check] [--skip STEP,...] [--budget 470]
# installs the bundle's wheels into a temporary site dir, builds drift for this GPU's arch only,
# runs the cuda-marked tests, compute-sanitizer, the benchmarks' GPU cases and a trainer smoke
# test, and writes ONE log and summary.json into --out. Steps run on after a failure; exit 1 if
# any failed. The step runner is scripts/gpu_check.py (standard library only).
set -u
cd "$(dirname "$0")/.." || exit 2
py="${PYTHON:-python3}"
"$py" scripts/gpu_check.py run "$@"
rc=$?
echo "gpu_check.sh: exit status $rc"
exit $rc
