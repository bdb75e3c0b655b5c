#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/carry sent along (pack.sh + pack_nodes.sh):
# the pinned graph for 240 frames (1280x720, 4 windows) with the real pack nodes (pose/face ONNX,
# DrawViTPose, SAM2, KJNodes masks), one sampler step per window so it fits one 600-s command.
#   bash bench/gpu/run_device_packs.sh [more gpu_bench.py arguments]
# Every node that ran, with its time, lands in $OUT/results.json (saved after each node: a run cut
# short still says what ran) and $OUT/table.md. The python run is capped at BENCH_LIMIT_S (570 s)
# so the table is written before the device command's own 600-s limit.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
LIMIT=${BENCH_LIMIT_S:-570}
OUT=${OUT:-/tmp/gpu-bench-out}
export OUT
mkdir -p "$OUT"
timeout --signal=INT --kill-after=15 "$LIMIT" bash bench/gpu/run_device.sh --packs /tmp/packs --mode clip \
    --steps 1 --frames 240 "$@"
code=$?
echo "run_device_packs: exit $code" | tee -a "$OUT/log.txt"
exit $code
