#!/usr/bin/env bash
# On the GPU machine, from the repository root: the attention kernels side by side (bench/README.md,
# "Attention kernels"). What it needs travels in three calls (64 MiB each); each call unpacks what it
# brought into /tmp (kept while the machine stays warm) and the one that completes the set runs:
#   call 1, carry .gpu/carry (pack.sh)               bash bench/gpu/run_device_attention.sh
#   call 2, carry .gpu/carry-attn/1 (pack_attention)  bash bench/gpu/run_device_attention.sh
#   call 3, carry .gpu/carry-attn/2                   bash bench/gpu/run_device_attention.sh probe
#   call 4, nothing to carry                          bash bench/gpu/run_device_attention.sh compare
# probe (~3 min): the node's probe per backend at 75,600 tokens x 40 heads x 128 (numerics vs math attention,
# call time, peak memory), fa4 with an empty kernel cache and again with the cache the first run wrote.
# compare (~6 min): window 1's sampler, 3 steps per backend, through the pinned workflow (gpu_bench.py
# --mode compare, random shape-true weights). "all" (the default) runs both: past 600 s on a slow start.
set -uo pipefail
WHAT=${1:-all}
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT" /tmp/attn-parts
if [ -f .gpu/carry/comfy.tar.xz ] || [ -f .gpu/carry/site.tar.xz ]; then
    UNPACK_ONLY=1 bash bench/gpu/run_device.sh || exit 1 # comfy + site into /tmp
fi
for part in .gpu/carry-attn/1/* .gpu/carry-attn/2/*; do
    [ -f "$part" ] && cp "$part" /tmp/attn-parts/
done
if [ -f /tmp/attn-parts/fa3.tar.xz ] && [ ! -d /tmp/site-attn/fa3_fwd ]; then
    mkdir -p /tmp/site-attn && tar -C /tmp/site-attn -xJf /tmp/attn-parts/fa3.tar.xz || exit 1
fi
if [ -f /tmp/attn-parts/fa4.tar.xz.part-00 ] && [ -f /tmp/attn-parts/fa4.tar.xz.part-01 ] &&
    [ ! -d /tmp/site-attn/flash_attn ]; then
    cat /tmp/attn-parts/fa4.tar.xz.part-00 /tmp/attn-parts/fa4.tar.xz.part-01 >/tmp/attn-parts/fa4.tar.xz
    echo "$(cat /tmp/attn-parts/fa4.tar.xz.sha256)  /tmp/attn-parts/fa4.tar.xz" | sha256sum -c - || exit 1
    mkdir -p /tmp/site-attn && tar -C /tmp/site-attn -xJf /tmp/attn-parts/fa4.tar.xz || exit 1
fi
missing=()
[ -f /tmp/comfyui/nodes.py ] || missing+=("ComfyUI (.gpu/carry)")
[ -d /tmp/site/comfy_kitchen ] || missing+=("site (.gpu/carry)")
[ -d /tmp/site-attn/fa3_fwd ] || missing+=("fa3 (.gpu/carry-attn/1)")
[ -d /tmp/site-attn/flash_attn ] || missing+=("fa4 (.gpu/carry-attn/1 and /2)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "unpacked what came; still to carry: ${missing[*]}"
    exit 0
fi
# The CuTe DSL's `cutlass` lives in nvidia_cutlass_dsl/dsl_packages, which its .pth file adds in a site
# directory; PYTHONPATH entries get no .pth processing, so the folder is named here.
ATTN_PATH=/tmp/site-attn/nvidia_cutlass_dsl/dsl_packages:/tmp/site-attn
export PYTHONPATH=$ATTN_PATH:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4-cache \
    CUTE_DSL_CACHE_DIR=/tmp/cute-dsl-cache
if [ "$WHAT" = probe ] || [ "$WHAT" = all ]; then
    rm -rf /tmp/fa4-cache /tmp/cute-dsl-cache
    timeout 240 python3 bench/gpu/attention_probe.py --out "$OUT" 2>&1 | tee -a "$OUT/log.txt"
    timeout 120 python3 bench/gpu/attention_probe.py --out "$OUT" --backends fa4 --label warm-cache 2>&1 |
        tee -a "$OUT/log.txt"
fi
if [ "$WHAT" = compare ] || [ "$WHAT" = all ]; then
    PYTHONPATH=$ATTN_PATH timeout 540 bash bench/gpu/run_device.sh --mode compare \
        --backends cudnn,flash,sage,fa4,fa3 --compare-steps 3
fi
