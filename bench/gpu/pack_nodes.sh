#!/usr/bin/env bash
# The custom node packs the pinned graph runs (WanAnimatePreprocess, segment-anything-2, KJNodes), at
# exactly the commits docker/custom_nodes.txt pins, taken from local git mirrors: never committed here.
#   bash bench/gpu/pack_nodes.sh [MIRRORS_DIR]   (default /work/.mirror: <owner>+<repo>/repo per repository)
# -> .gpu/packs/<folder>/ (code only, for --packs .gpu/packs on this machine)
#    .gpu/carry/packs.tar.xz (the same folders, ~1 MB, unpacked by run_device_packs.sh on the GPU machine)
set -euo pipefail
MIRRORS=${1:-/work/.mirror}
cd "$(dirname "$0")/../.."
PACKS="ComfyUI-WanAnimatePreprocess ComfyUI-segment-anything-2 ComfyUI-KJNodes"
rm -rf .gpu/packs && mkdir -p .gpu/packs .gpu/carry
for folder in $PACKS; do
    commit=$(awk -v f="$folder" '$1 == f {print $3}' docker/custom_nodes.txt)
    [ -n "$commit" ] || { echo "$folder: no pin in docker/custom_nodes.txt" >&2; exit 1; }
    found=""
    for repo in "$MIRRORS"/*+"$folder"/repo; do
        if git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then found=$repo && break; fi
    done
    [ -n "$found" ] || { echo "$folder: commit $commit is in no mirror under $MIRRORS" >&2; exit 1; }
    mkdir -p ".gpu/packs/$folder"
    # Code only: no example workflows, docs, web UI or pictures (none is imported by the nodes).
    git -C "$found" archive --format=tar "$commit" | tar -x -C ".gpu/packs/$folder" \
        --exclude='example_workflows' --exclude='docs' --exclude='.github' --exclude='web' \
        --exclude='kjweb_async' --exclude='*.png' --exclude='*.jpg' --exclude='*.gif' --exclude='*.mp4'
    echo "$folder $commit (from $found)" >>".gpu/packs/PINS.txt"
done
tar -C .gpu -cf - packs | xz -9 -T0 >.gpu/carry/packs.tar.xz
cat .gpu/packs/PINS.txt
ls -la .gpu/carry/packs.tar.xz
