#!/usr/bin/env bash
# The paper-orderings study on an offline GPU machine in short visits (see docs/GPU.md, "The study on a GPU"):
#   scripts/gpu_study.sh pack                  here: the model in parts, data, wheels -> build/gpu-study/call<K>/
#   scripts/gpu_study.sh part K                there: stage call K's files (SHA-256 checked)
#   scripts/gpu_study.sh run TASK [...]        there: prepare, run sweep | throughput | xsum | mtsdialog into $OUT
#   scripts/gpu_study.sh collect ARCHIVE       here: unpack a run's results into experiments/paper_orderings/results/gpu
# The steps are scripts/gpu_study.py (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_study.py "$@"
