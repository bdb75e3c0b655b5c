#!/usr/bin/env bash
# Once, on a machine with PyPI: the attention kernels for the GPU machine (run_device_attention.sh), as
# archives small enough to travel (64 MiB a call, with the repository): .gpu/carry-attn/1 and /2.
#   bash bench/gpu/pack_attention.sh     -> .gpu/carry-attn/1/{fa4.tar.xz.part-aa,fa3.tar.xz}, 2/fa4.tar.xz.part-ab
# flash-attn-4 and its dependencies at the versions docker/constraints.txt pins (~70 MiB as xz: CuTe DSL's
# MLIR compiler alone is 190 MB), split in two; fa3-fwd (its wheel). Python 3.12, x86_64, as the GPU image.
set -euo pipefail
FLASH_ATTN_4_VERSION=${FLASH_ATTN_4_VERSION:-4.0.0b36}
FA3_FWD_VERSION=${FA3_FWD_VERSION:-0.0.3}
cd "$(dirname "$0")/../.."
pins=$(grep -E '^(nvidia-cutlass-dsl|quack-kernels|apache-tvm-ffi|torch-c-dlpack-ext|cuda-bindings|cuda-pathfinder|protobuf)' \
    docker/constraints.txt)
rm -rf .gpu/build-attn .gpu/carry-attn && mkdir -p .gpu/build-attn/fa4 .gpu/build-attn/fa3 .gpu/carry-attn/1 \
    .gpu/carry-attn/2 .gpu/wheels-attn/fa4 .gpu/wheels-attn/fa3
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$@"
}
# shellcheck disable=SC2086  # one requirement a word
download .gpu/wheels-attn/fa4 "flash-attn-4==${FLASH_ATTN_4_VERSION}" einops==0.8.2 $pins
download .gpu/wheels-attn/fa3 "fa3-fwd==${FA3_FWD_VERSION}"
for wheel in .gpu/wheels-attn/fa4/*.whl; do unzip -q -o "$wheel" -d .gpu/build-attn/fa4; done
for wheel in .gpu/wheels-attn/fa3/*.whl; do unzip -q -o "$wheel" -d .gpu/build-attn/fa3; done
tar -C .gpu/build-attn/fa4 -cf - . | xz -9 -T0 >.gpu/build-attn/fa4.tar.xz
tar -C .gpu/build-attn/fa3 -cf - . | xz -9 -T0 >.gpu/carry-attn/1/fa3.tar.xz
split -n 2 -d -a 2 .gpu/build-attn/fa4.tar.xz .gpu/build-attn/fa4.tar.xz.part-
mv .gpu/build-attn/fa4.tar.xz.part-00 .gpu/carry-attn/1/
mv .gpu/build-attn/fa4.tar.xz.part-01 .gpu/carry-attn/2/
sha256sum .gpu/build-attn/fa4.tar.xz | cut -d' ' -f1 >.gpu/carry-attn/2/fa4.tar.xz.sha256
du -sh .gpu/carry-attn/1 .gpu/carry-attn/2
