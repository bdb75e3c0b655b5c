#!/usr/bin/env bash
# Once, on a machine with PyPI: pack what the GPU machine lacks into .gpu/carry/ (git-ignored, never
# committed): ComfyUI's code from a checkout, and the wheels its image has not (Python 3.12 there).
#   bash bench/gpu/pack.sh /path/to/ComfyUI        -> .gpu/carry/{comfy,site}.tar.xz (~55 MB)
set -euo pipefail
COMFY=${1:?usage: pack.sh /path/to/ComfyUI}
cd "$(dirname "$0")/../.."
mkdir -p .gpu/carry .gpu/wheels
rm -rf .gpu/build && mkdir -p .gpu/build/site

# ComfyUI: code only (no models, tests, custom_nodes, .git).
tar -C "$COMFY" --exclude='__pycache__' --exclude='*.pyc' -cf - comfy comfy_api comfy_execution comfy_extras \
    comfy_config app utils middleware api_server nodes.py folder_paths.py node_helpers.py latent_preview.py \
    comfyui_version.py execution.py protocol.py cuda_malloc.py hook_breaker_ac10a0.py server.py requirements.txt \
    pyproject.toml | xz -9 -T0 >.gpu/carry/comfy.tar.xz

# Wheels: ComfyUI 0.33.0's requirements that the GPU image lacks (kornia: BatchImagesNode's module;
# sqlalchemy/alembic/pydantic: imported by server.py, which ImageFromBatch's module imports) and
# sageattention (the `sage` backend, Triton kernels).
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux_2_12_x86_64 manylinux2010_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/wheels comfy-kitchen==0.2.31 comfy-aimdo==0.4.13 torchsde==0.2.6 \
    trampoline==0.1.2 av==19.0.2 kornia==0.9.0 kornia_rs==0.2.0 sageattention==1.0.6 alembic==1.20.1 \
    mako==1.4.3 sqlalchemy==2.1.9 greenlet==3.5.6 pydantic==2.14.3 pydantic_core==2.50.4 annotated_types==0.8.0 \
    typing_inspection==0.4.5 pydantic_settings==2.16.3 python_dotenv==1.2.4 simpleeval==1.0.8 blake3==1.0.11
for wheel in .gpu/wheels/*.whl; do unzip -q -o "$wheel" -d .gpu/build/site; done
rm -f .gpu/build/site/comfy_kitchen/backends/hip/_C*.so # ROCm kernels: loaded only under HIP
tar -C .gpu/build/site -cf - . | xz -9 -T0 >.gpu/carry/site.tar.xz
ls -la .gpu/carry
