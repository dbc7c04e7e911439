#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one command on a machine with a GPU, at most ~8 minutes, one Markdown
# table on stdout (and in --out FILE). `bash benchmarks/gpu_check.sh --cpu-smoke` runs it at toy sizes on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu_check "$@"
