# syntax=docker/dockerfile:1.7
# The Wan2.2 Animate worker: a pinned ComfyUI with its custom node packs, and the RunPod handler beside it.
# No model weights: download_models.py puts them in place at cold start (see docs/deploy.md).
# Layers go from what changes least to what changes most: the build's inputs (pins, requirements, the build
# helper) first and by meaning only, this repository's ComfyUI nodes next, the worker's code last.
ARG BASE_IMAGE=runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404

# The build's inputs without their comments (install_custom_nodes.py normalize). The clone and install
# layers below copy these, so a comment change re-runs this small stage and nothing after it.
FROM ${BASE_IMAGE} AS inputs
COPY docker/install_custom_nodes.py docker/custom_nodes.txt docker/constraints.txt requirements.txt /src/
RUN python /src/install_custom_nodes.py normalize /src /inputs

FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# System tools: ffmpeg (media checks, VideoHelperSuite), git (pinned clones), curl (readiness probe).
# Not pinned by version: Ubuntu's archive drops superseded versions; the base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl ffmpeg git \
    && rm -rf /var/lib/apt/lists/* \
    && ffmpeg -hide_banner -version | head -n 1

# Every package goes into a virtual environment over the base image's Python (--system-site-packages):
# the base's torch and CUDA libraries are used as they are, and nothing apt owns is touched. Installing
# into the system Python would have to upgrade apt's cryptography, requests and urllib3 (runpod 1.12 needs
# newer ones), which pip cannot uninstall (no RECORD file): the build would stop. In the environment the
# newer versions shadow apt's (tests/test_image_python.py reproduces both). PIP_BREAK_SYSTEM_PACKAGES=0
# undoes the base image's 1, so anything that still aimed at the system Python would fail loudly.
RUN python -m venv --system-site-packages /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_BREAK_SYSTEM_PACKAGES=0

WORKDIR /opt/build
COPY --from=inputs /inputs/install_custom_nodes.py ./

# ComfyUI at a pinned commit (0.33.0 + 40 commits: release commit 2f35f4a0 is its 40th ancestor;
# shared/comfyui/STACK.md §1). Before anything is installed, remember the base image's torch family and
# `pip check` so the build can prove they survive.
ARG COMFYUI_REPO=https://github.com/Comfy-Org/ComfyUI
ARG COMFYUI_COMMIT=783545f689a0af730065994b46b382ae24844c99
RUN python install_custom_nodes.py snapshot /opt/build/base \
    && python install_custom_nodes.py clone "${COMFYUI_REPO}" "${COMFYUI_COMMIT}" /comfyui

# The custom node packs, each at its pinned commit (the one list: docker/custom_nodes.txt).
COPY --from=inputs /inputs/custom_nodes.txt ./
RUN python install_custom_nodes.py clone-list custom_nodes.txt /comfyui/custom_nodes

# One resolver run for ComfyUI, the packs and the worker, under the constraints; then the checks:
# torch family unchanged, a single OpenCV wheel, onnxruntime-gpu with CUDA, no new `pip check` problem.
# Optional attention kernels, each installed only when its version is given (empty: not installed; their
# dependencies are pinned in constraints.txt): SAGEATTENTION_VERSION (1.0.6) for ATTENTION_BACKEND=sage /
# ENABLE_SAGE_ATTENTION=1, FLASH_ATTN_4_VERSION (4.0.0b36) for fa4, FA3_FWD_VERSION (0.0.3) for fa3 (its
# wheel needs torch >= 2.11 with CUDA 13: on this base it installs but cannot load; the probe says so).
ARG SAGEATTENTION_VERSION=""
ARG FLASH_ATTN_4_VERSION=""
ARG FA3_FWD_VERSION=""
COPY --from=inputs /inputs/constraints.txt /inputs/requirements.txt ./
RUN python install_custom_nodes.py requirements --comfy-dir /comfyui --nodes-list custom_nodes.txt \
        --nodes-dir /comfyui/custom_nodes --out stack-requirements.txt \
    && python -m pip install -c constraints.txt -c base/base-constraints.txt \
        -r stack-requirements.txt -r requirements.txt ${SAGEATTENTION_VERSION:+"sageattention==${SAGEATTENTION_VERSION}"} \
        ${FLASH_ATTN_4_VERSION:+"flash-attn-4==${FLASH_ATTN_4_VERSION}"} ${FA3_FWD_VERSION:+"fa3-fwd==${FA3_FWD_VERSION}"} \
    && python install_custom_nodes.py check-python /opt/build/base

# This repository's own custom nodes, then the import check: ComfyUI starts once on the CPU and the build
# fails if any folder of custom_nodes/ is missing from its import log or marked IMPORT FAILED. The run also
# leaves compiled bytecode and matplotlib's font cache in the image, which shortens every cold start.
COPY comfyui_nodes/ /comfyui/custom_nodes/
RUN python /comfyui/main.py --quick-test-for-ci --cpu --disable-auto-launch 2>&1 | tee /tmp/comfy-import.log \
    && python install_custom_nodes.py check-imports /tmp/comfy-import.log /comfyui/custom_nodes \
    && rm -rf /tmp/comfy-import.log /comfyui/user /comfyui/temp

# flash-attn-4 (only when FLASH_ATTN_4_VERSION was given) compiles its kernels at first use and keeps them
# on disk here: its kernel for the workflow's attention on Hopper is compiled now, without a GPU (fake
# tensors), so the probe at ComfyUI's start loads it; kernels compiled at run time land here too.
ENV FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 \
    FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/root/.cache/flash-attn-cute \
    CUTE_DSL_CACHE_DIR=/root/.cache/cute-dsl
COPY docker/prewarm_fa4.py ./
RUN if [ -n "${FLASH_ATTN_4_VERSION}" ]; then \
        python prewarm_fa4.py --node-dir /comfyui/custom_nodes/wan_worker_attention --arch sm_90; \
    fi

# Where things are; the worker and the entrypoint read these (docs/deploy.md lists every variable).
# COMFY_URL is not set: it follows COMFY_PORT (entrypoint.sh, worker/config.py).
# HF_*: keep Hugging Face's cache on the container disk (the base image sets HF_HOME to
# /workspace/.cache/huggingface/); RunPod's cached models are read from /runpod-volume/huggingface-cache.
ENV APP_DIR=/app \
    COMFY_DIR=/comfyui \
    COMFY_PORT=8188 \
    COMFY_INPUT_DIR=/comfyui/input \
    COMFY_OUTPUT_DIR=/comfyui/output \
    COMFY_MODELS_DIR=/comfyui/models \
    WORKFLOW=workflows/wan22_animate_replace.json \
    HF_HOME=/root/.cache/huggingface \
    HF_HUB_CACHE=/root/.cache/huggingface/hub \
    HUGGINGFACE_HUB_CACHE=/root/.cache/huggingface/hub \
    HF_HUB_ENABLE_HF_TRANSFER=0

# The worker itself: the only layers a code change rebuilds.
WORKDIR /app
COPY handler.py download_models.py ./
COPY models/manifest.json models/
COPY workflows/ workflows/
COPY worker/ worker/
COPY --chmod=0755 entrypoint.sh ./

ENTRYPOINT ["/app/entrypoint.sh"]
