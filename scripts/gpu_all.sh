#!/usr/bin/env bash
# Every GPU-only measurement the open issues ask for, in one command, on a machine with an NVIDIA GPU,
# torch (CUDA build), triton, nvcc and ncu:
#   WHEELS=/path/to/wheels BUDGET_S=540 bash scripts/gpu_all.sh     (logs in $OUT, default ./gpu-all-out)
# WHEELS: a folder with the wheels of langgraph, langgraph-checkpoint-sqlite, openai (and ray, for
#   the Ray row of the throughput table) when the machine has no network; not needed when importable.
# BUDGET_S: the seconds this may take in all (a rented GPU's lease). Steps run in the order below,
#   each cut at its own cap or at the budget's end, whichever comes first; a step that no longer
#   fits is skipped and says so. Without BUDGET_S every step runs to its cap.
#   smoke       one candidate evaluated on the GPU; if that fails nothing else is worth running
#   latency     one-more-candidate latency and where it goes (issue 2)
#   api         kevolve.optimize's module vs eager and torch.compile (issue 7)
#   session     a scripted 5-round LLM session and where its time goes (issue 4)
#   throughput  candidates per minute per executor (issue 8)
#   battery     the harness's GPU tests (issue 2)
#   seed        the compiler seed exported, accepted and timed at torch.compile's speed (issue 6)
#   builtin     the builtin templates' first candidates timed (scripts/bench_builtin.py)
#   probes      the same for benchmarks/probes: lowering no suite problem exercises (not in the suite)
#   conv        where torch.compile's convolutions win over the conv+tail template (scripts/gpu_conv_probe.py)
#   host        the host's time per forward, template vs eager vs torch.compile (scripts/host_overhead.py)
#   profile     kevolve profile on a Triton and a CUDA C++ candidate
#   suite       the builtin bench table over benchmarks/problems (issue 6; about 2 h at TIME=5m)
set -uo pipefail
OUT=${OUT:-gpu-all-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KEVOLVE_CACHE_DIR=${KEVOLVE_CACHE_DIR:-/tmp/kevolve-cache}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-1000000}

# step NAME CAP_S COMMAND...: COMMAND's output goes to the screen and $OUT/NAME.log
step() {
  local name=$1 cap=$2 left=$((BUDGET - SECONDS))
  shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" ${name%%-*} "* ]]; then return 0; fi
  if ((left < 30)); then echo "== $name: skipped, $left s of the budget left"; return 1; fi
  ((cap > left)) && cap=$left
  echo "== $name (at most $cap s, at $SECONDS s)"
  timeout -k 10 "$cap" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  ((rc == 124)) && echo "== $name: cut at $cap s"
  echo "== $name: exit $rc, at $SECONDS s"
  return "$rc"
}

$PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --find-links "$WHEELS" langgraph langgraph-checkpoint-sqlite openai \
    >>"$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
  $PY -m pip install -q --no-index --find-links "$WHEELS" ray >>"$OUT/install.log" 2>&1 || true
fi
$PY -m kevolve.cli doctor 2>&1 | tee "$OUT/doctor.log"
status=0
step smoke 180 $PY -m kevolve.cli evaluate examples/problems/scale_bias_gelu.py \
  examples/candidates/scale_bias_gelu_triton.py --device cuda || { echo "smoke failed: stopping"; exit 1; }
step latency 180 $PY scripts/bench_eval_latency.py --rounds 3 || status=1
step api 240 $PY scripts/gpu_api_check.py || status=1
step session 240 $PY scripts/gpu_session_check.py cuda || status=1
configs=local:1,local:8
$PY -c "import ray" 2>/dev/null && configs=$configs,ray
step throughput 360 $PY scripts/bench_throughput.py --configs $configs || status=1
step battery 400 $PY -m pytest tests/harness -m gpu -q -p no:cacheprovider || status=1
step seed 300 $PY -m pytest tests/builtin -m gpu -q -p no:cacheprovider || status=1
step builtin 300 $PY scripts/bench_builtin.py || status=1
step probes 360 $PY scripts/bench_builtin.py benchmarks/probes/*.py || status=1
step conv 330 $PY scripts/gpu_conv_probe.py || status=1
step host 240 $PY scripts/host_overhead.py --top 1 --device cuda \
  benchmarks/problems/{rms_norm,softmax_temperature,ew_bias_gelu_scale,linear_bias_gelu,cross_entropy}.py || status=1
if [ "${SKIP_PROFILE:-0}" != 1 ]; then
  for c in scale_bias_gelu_triton scale_bias_gelu_cuda; do
    step "profile-$c" 120 $PY -m kevolve.cli profile examples/problems/scale_bias_gelu.py \
      "examples/candidates/$c.py" || status=1
  done
fi
if [ "${SKIP_SUITE:-0}" != 1 ]; then
  # The suite resumes where it was cut: rows already in results.csv are kept. Within a budget, no
  # problem starts unless it can finish ($TIME plus a minute for the session's last step and exit).
  per_problem=$($PY -c "from kevolve.cli_args import parse_duration as p; print(int(p('${TIME:-5m}')))")
  stop_after=$((BUDGET - SECONDS - per_problem - 60))
  ((stop_after < 0)) && stop_after=0
  step suite $((BUDGET - SECONDS)) env OUT="$OUT/suite" STOP_AFTER="${STOP_AFTER:-${stop_after}s}" \
    bash scripts/gpu_bench_suite.sh || status=1
fi
exit $status
