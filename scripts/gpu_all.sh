#!/usr/bin/env bash
# Every GPU-only measurement the open issues ask for, in one command, on a machine with an NVIDIA GPU,
# torch (CUDA build), triton, nvcc and ncu:
#   WHEELS=/path/to/wheels bash scripts/gpu_all.sh        (logs in $OUT, default ./gpu-all-out)
# WHEELS: a folder with the wheels of langgraph, langgraph-checkpoint-sqlite, openai (and ray, for
# the Ray row of the throughput table) when the machine has no network; not needed when importable.
#   1. scripts/gpu_check.sh        battery, builtin templates timed, one-more-candidate latency (issue 2),
#                                  candidates per minute per executor (issue 8), profiles
#   2. scripts/gpu_session_check.py  a scripted 5-round LLM session and where its time goes (issue 4)
#   3. scripts/gpu_api_check.py    kevolve.optimize's module vs eager and torch.compile (issue 7)
#   4. scripts/gpu_bench_suite.sh  the 29-problem builtin bench table (issue 6; about 2 h at TIME=5m)
set -uo pipefail
OUT=${OUT:-gpu-all-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --find-links "$WHEELS" langgraph langgraph-checkpoint-sqlite openai \
    >"$OUT/wheels.log" 2>&1 || { tail -20 "$OUT/wheels.log"; exit 1; }
  $PY -m pip install -q --no-index --find-links "$WHEELS" ray >>"$OUT/wheels.log" 2>&1 || true
fi
status=0
OUT=$OUT/check bash scripts/gpu_check.sh || status=1
$PY scripts/gpu_session_check.py cuda 2>&1 | tee "$OUT/session.log" || status=1
$PY scripts/gpu_api_check.py 2>&1 | tee "$OUT/api.log" || status=1
[ "${SKIP_SUITE:-0}" = 1 ] || OUT=$OUT/suite bash scripts/gpu_bench_suite.sh || status=1
exit $status
