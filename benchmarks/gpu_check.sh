#!/usr/bin/env bash
# The GPU check, for every session with a GPU (first run on an H200 on 2026-12-04; benchmarks/RESULTS.md): the
# test suite on CuPy, step times (batch 100 and 8192, each update rule, PyTorch eager CUDA and the SGEMM rate
# beside them) and the batch sweep, in <= 8 minutes, with one JSON summary ($OUT/gpu_check.json, else
# benchmarks/out/gpu_check.json) that names the first failure.
# Installs nothing: it needs the GPU image's CuPy and PyTorch (and its pytest, hypothesis).
#
#   bash benchmarks/gpu_check.sh [--budget SECONDS] [--only probe,tests,step_time,sweep] [--workers N]
#
# Exit 0 when every stage passed, 1 otherwise; the stages are described in benchmarks/gpu_check.py.
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
# minigan from this checkout, for this script and every process it starts (tests run `python -m minigan`).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import minigan" 2>/dev/null; then
    # Only if the path above does not do it: an editable install without dependencies or network.
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . || echo "gpu_check: pip install -e . failed" >&2
fi
exec "$PY" benchmarks/gpu_check.py "$@"
