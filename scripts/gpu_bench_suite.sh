#!/usr/bin/env bash
# The issue-6 benchmark in one command, for a machine with an H100, torch (CUDA build) and triton:
#   bash scripts/gpu_bench_suite.sh                  (results go to $OUT, default ./gpu-bench-out)
#   TIME=5m ONLY='bf16_*,conv_*' JOBS=3 bash scripts/gpu_bench_suite.sh
# STOP_AFTER: start no problem after this long (e.g. 400s), so a lease ends between problems, not inside one.
# JOBS: problems optimized at once (default 1). Their timings, references and profiles take the GPU
# in turn (kevolve.tools.gpu_lock); only compiles and CPU work overlap.
# Runs `kevolve bench benchmarks/problems --device cuda` with the builtin Coder and Judge, at most
# $TIME (default 5m) per problem, and prints the table (OUT/results.md; OUT/results.csv too).
# Resumable: run it again after an interruption and the problems already in results.csv are skipped
# (delete OUT/results.csv to start over).
# Installs kevolve without dependencies so the machine's own torch and triton are used. The session
# also needs langgraph (and the openai client, imported by the LLM backends): on a machine without
# network access, carry their wheels and set WHEELS=/path/to/wheels (pip installs from there, offline).
set -uo pipefail
OUT=${OUT:-gpu-bench-out}
TIME=${TIME:-5m}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KEVOLVE_CACHE_DIR=${KEVOLVE_CACHE_DIR:-/tmp/kevolve-cache}
PY=${PYTHON:-python3}
$PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
if ! $PY -c "import langgraph, openai" 2>/dev/null; then
  if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --find-links "$WHEELS" langgraph langgraph-checkpoint-sqlite openai \
      >>"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
  else
    echo "gpu_bench_suite: langgraph/openai are missing; pip install them (or set WHEELS=DIR of their wheels)" >&2
    exit 1
  fi
fi
$PY -m kevolve.cli doctor 2>&1 | tee "$OUT/doctor.log"
args=(bench benchmarks/problems --device cuda --time "$TIME" --out "$OUT")
[ -n "${ONLY:-}" ] && args+=(--only "$ONLY")
[ -n "${JOBS:-}" ] && args+=(--jobs "$JOBS")
[ -n "${STOP_AFTER:-}" ] && args+=(--stop-after "$STOP_AFTER")
$PY -m kevolve.cli "${args[@]}" "$@" 2>&1 | tee "$OUT/bench.log"
status=${PIPESTATUS[0]}
echo
echo "table: $OUT/results.md   rows: $OUT/results.csv   per-problem logs: $OUT/logs/   sessions: $OUT/sessions/"
exit "$status"
