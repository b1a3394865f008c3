#!/usr/bin/env bash
# The harness's GPU checks in one command, for a machine with an NVIDIA GPU, torch (CUDA build) and
# triton: GPU tests, builtin templates timed, one-more-candidate latency, candidates per minute per
# executor, profiles. The steps of scripts/gpu_all.sh that need no langgraph or openai.
#   bash scripts/gpu_check.sh            (logs go to $OUT, default ./gpu-check-out)
OUT=${OUT:-gpu-check-out} STEPS=${STEPS:-"battery builtin latency throughput profile"} \
  exec bash "$(dirname "$0")/gpu_all.sh"
