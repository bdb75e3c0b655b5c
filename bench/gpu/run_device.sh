#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/carry sent along (see pack.sh):
#   bash bench/gpu/run_device.sh [gpu_bench.py arguments]
set -uo pipefail
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
if [ ! -f /tmp/comfyui/nodes.py ]; then
    mkdir -p /tmp/comfyui && tar -C /tmp/comfyui -xJf .gpu/carry/comfy.tar.xz || exit 1
fi
if [ ! -d /tmp/site/comfy_kitchen ]; then
    mkdir -p /tmp/site
    for archive in .gpu/carry/site*.tar.xz; do tar -C /tmp/site -xJf "$archive" || exit 1; done
fi
if [ -f .gpu/carry/packs.tar.xz ] && [ ! -d /tmp/packs/ComfyUI-KJNodes ]; then
    tar -C /tmp -xJf .gpu/carry/packs.tar.xz || exit 1 # -> /tmp/packs/<pack> (pack_nodes.sh)
fi
[ "${UNPACK_ONLY:-0}" = 1 ] && exit 0
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}/tmp/site PYTHONUNBUFFERED=1 BENCH_COMMIT=${BENCH_COMMIT:-unknown}
python3 bench/gpu_bench.py --comfy /tmp/comfyui --out "$OUT" "$@" 2>&1 \
    | grep -v -E '^\s*[0-9]+%\||^Found comfy_kitchen backend|^setup plugin' | tee -a "$OUT/log.txt"
