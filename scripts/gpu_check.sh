#!/usr/bin/env bash
# The GPU checks in one command, for a machine with an NVIDIA GPU, torch (CUDA build) and triton:
#   bash scripts/gpu_check.sh            (logs go to $OUT, default ./gpu-check-out)
# Installs kevolve without dependencies so the machine's own torch and triton are used.
set -uo pipefail
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KEVOLVE_CACHE_DIR=${KEVOLVE_CACHE_DIR:-/tmp/kevolve-cache}
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
python3 -m kevolve.cli doctor 2>&1 | tee "$OUT/doctor.log"
status=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest tests/harness -m gpu -q -s -p no:cacheprovider "$@" 2>&1 | tee "$OUT/pytest-gpu.log" || status=1
fi
python3 scripts/bench_builtin.py 2>&1 | tee "$OUT/bench-builtin.log" || status=1
python3 scripts/bench_eval_latency.py --rounds 3 2>&1 | tee "$OUT/bench-latency.log" || status=1
# candidates per minute on each executor (the Ray row only where Ray is installed)
configs=local:1,local:8; python3 -c "import ray" 2>/dev/null && configs=$configs,ray
python3 scripts/bench_throughput.py --configs $configs 2>&1 | tee "$OUT/bench-throughput.log" || status=1
[ "${SKIP_PROFILE:-0}" = 1 ] || for c in scale_bias_gelu_triton scale_bias_gelu_cuda; do
  /usr/bin/time -f "profile $c: %e s wall" python3 -m kevolve.cli profile examples/problems/scale_bias_gelu.py \
    examples/candidates/$c.py 2>&1 | tee "$OUT/profile-$c.log" || status=1
done
exit $status
