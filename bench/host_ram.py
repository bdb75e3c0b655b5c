"""Host RAM of the pinned Wan2.2 Animate graph's prompts, one prompt or chunks of K windows: tables, no GPU.

    python bench/host_ram.py                          # one prompt: 240, 721 and 1440 frames at 1280x720
    python bench/host_ram.py --chunks                 # per K = 0 (one prompt), 1..6 windows a prompt
    python bench/host_ram.py --frames 721 --chunk-windows 4 --nodes   # every node of the largest chunk
    python bench/host_ram.py --validate --comfy DIR   # toy run through ComfyUI's executor, compared

The graphs are the worker's own: ``Workflow.chunks(N, chunk_windows=K)`` and, per chunk,
``Workflow.build(params, chunk=..., clip_frames=N, motion_file=...)`` with the parameters
``Job._run_prompt`` sets (``chunk_graphs``). For each node, in the order ComfyUI's executor runs
that graph (``comfy_order``), the model gives the bytes of the CPU tensors its outputs add (a view
of an input adds nothing) and the transient working set inside the node, both read from the
pinned node code (ComfyUI 0.33.0, WanAnimatePreprocess, segment-anything-2, KJNodes, this
repository's comfyui_nodes; ``node_ram`` and each row's "what" say which tensors). Two peaks:

* **cached**: ComfyUI's default cache (``RAMPressureCache``, what ``main.py`` starts) keeps every
  node output of the prompt until the prompt ends (and until the next prompt's first node has run).
  Peak = max over nodes of (outputs of every node run so far + this node's transient).
* **floor**: under RAM pressure the cache evicts entries of >= 512 MB once less than its headroom
  (10 % of RAM, 2-10 GB) is free, but ``ExecutionList.execution_cache`` still holds every output a
  pending node will read. Peak = max over nodes of (outputs still to be read + this node's output
  and transient): no host with less RAM than this can run the prompt at all.

Between the prompts of one job (``model_job``): the cache keys are input signatures, so a node
whose inputs (and their ancestors) equal a node of the previous prompt is a cache hit and does not
run (the model loaders and the two text encodes); every other node differs (the worker uploads each
chunk's avatar, driving slice and motion frames under a fresh name). The previous prompt's entries
stay until the next prompt's first executed node has finished (``ram_release(ram_inactive)``, whose
target, min(128 GiB, total RAM), is above what is free on any host of <= 128 GiB), so the job's peak
is the largest of each prompt's peak and of (previous prompt's outputs + the next one's first node).

Model weights (DiT, umt5, VAE, CLIP-H, ONNX, SAM2) and the Python/torch baseline are not counted:
they do not grow with the video. Latents and conditioning are counted: ComfyUI keeps them on
``intermediate_device()``, the CPU (only ``--gpu-only`` puts them on the GPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.graph.api import is_link  # noqa: E402  (standard library only; after the path above)

F32 = 4
FACE = 512  # PoseAndFaceDetection's crops (cv2.resize to 512x512) and WanAnimateToVideo's face_video_pixels
SAM2_SIZE = 1024  # Sam2Segmentation (video) resizes the frames to model.image_size first thing
LATENT_CHANNELS = 16
TEXT_TOKENS, TEXT_DIM = 512, 4096  # umt5-xxl conditioning as CLIPTextEncode returns it for Wan
CLIP_VISION = (2 * 257 * 1280 + 1024) * F32  # last_hidden_state, penultimate_hidden_states, image_embeds
AUDIO_RATE, AUDIO_CHANNELS = 48000, 2  # the conformed driving video's audio, float32 planar
X264_BUFFERS = 64 * 2**20  # SaveVideo: libx264 lookahead/reference frames (estimate, not a tensor)
SAVE_BLOCK_FRAMES = 16  # comfyui_nodes/wan_worker_nodes/chunk_io.py: frames quantised at a time
MOTION_FRAMES = 5  # WanWorkerSaveChunk's motion_frames when the graph does not say (windows.motion_frames)
GB = 1e9
WORKFLOW = ROOT / "workflows" / "wan22_animate_replace.json"
OUTPUT_CLASSES = ("SaveVideo", "WanWorkerSaveChunk")  # OUTPUT_NODE classes of the pinned graphs, old and new
CHUNK_WINDOWS = (0, 1, 2, 3, 4, 5, 6)  # --chunks: K = 0 is one prompt for the whole clip

MODEL_OUTPUTS = {
    "CLIPVisionLoader", "UNETLoader", "StrictLoraLoaderModelOnly", "LoraLoaderModelOnly", "ModelSamplingSD3",
    "CLIPLoader", "VAELoader", "OnnxDetectionModelLoaderChecked", "OnnxDetectionModelLoader",
    "DownloadAndLoadSAM2Model",
}  # fmt: skip
ANIMATE = ("WanAnimateToVideo", "WanAnimateToVideoOfficialMask")


@dataclass(frozen=True)
class Dims:
    width: int = 1280
    height: int = 720
    fps: float = 24.0
    avatar: tuple[int, int] | None = None  # (width, height) of the avatar file; None: the target size
    audio: bool = True
    vae_bf16: bool = True  # the VAE runs in bf16 on the GPU: encode makes a bf16 CPU copy of its input

    @property
    def image(self) -> int:
        return self.height * self.width * 3 * F32

    @property
    def mask(self) -> int:
        return self.height * self.width * F32

    @property
    def face(self) -> int:
        return FACE * FACE * 3 * F32

    def latent(self, frames: int) -> int:
        return LATENT_CHANNELS * frames * (self.height // 8) * (self.width // 8) * F32


@dataclass
class NodeRam:
    node: str
    class_type: str
    frames: int  # the frame count that sizes this node's outputs (0: none)
    output: int  # bytes of new CPU tensors its outputs hold
    transient: int  # bytes inside the node on top of its inputs and outputs, at its worst moment
    what: str
    consumers: list[str] = field(default_factory=list)
    ran: bool = True  # False: a cache hit from the previous prompt (held, not executed)


def _link(value: Any) -> str | None:
    return value[0] if is_link(value) else None


def comfy_order(
    graph: Mapping[str, Mapping[str, Any]],
    output_classes: Iterable[str] = OUTPUT_CLASSES,
    cached: Iterable[str] = (),
) -> list[str]:
    """The order ComfyUI 0.33.0 runs a prompt in (no async or lazy inputs): ``TopologicalSort.add_node``
    from each output node (depth-first, a stack, so pending nodes are in that visiting order; a
    ``cached`` node, a hit in the output cache, is neither added nor waited for), then
    ``ExecutionList.ux_friendly_pick_node`` among the ready nodes: an output node first, then one that
    blocks an output node, then one two links from it, else the first ready one. ``--validate`` checks
    it against the order the executor really ran."""
    outputs = set(output_classes)
    hits = set(cached)
    pending: dict[str, bool] = {}
    blocks: dict[str, int] = {}
    blocking: dict[str, dict[str, bool]] = {}
    for start in [nid for nid, node in graph.items() if node["class_type"] in outputs and nid not in hits]:
        stack, links = [start], []
        while stack:
            uid = stack.pop()
            if uid in pending:
                continue
            pending[uid], blocks[uid], blocking[uid] = True, 0, {}
            for value in graph[uid]["inputs"].values():
                if (parent := _link(value)) in graph and parent not in hits:
                    stack.append(parent)
                    links.append((parent, uid))
        for parent, uid in links:
            if uid not in blocking[parent]:
                blocking[parent][uid] = True
                blocks[uid] += 1

    def is_output(nid: str) -> bool:
        return graph[nid]["class_type"] in outputs

    order: list[str] = []
    while pending:
        ready = [nid for nid in pending if blocks[nid] == 0]
        if not ready:
            raise ValueError("the graph has a cycle")
        pick = (
            next((n for n in ready if is_output(n)), None)
            or next((n for n in ready if any(is_output(b) for b in blocking[n])), None)
            or next((n for n in ready if any(is_output(c) for b in blocking[n] for c in blocking[b])), None)
            or ready[0]
        )
        order.append(pick)
        del pending[pick]
        for blocked in blocking.pop(pick):
            blocks[blocked] -= 1
    return order


def _frames_in(graph: Mapping[str, Mapping[str, Any]], sizes: Mapping[str, NodeRam], node_id: str) -> int:
    for value in graph[node_id]["inputs"].values():
        parent = _link(value)
        if parent in sizes and sizes[parent].frames:
            return sizes[parent].frames
    return 0


def node_ram(
    graph: Mapping[str, Mapping[str, Any]],
    node_id: str,
    sizes: Mapping[str, NodeRam],
    dims: Dims,
    frames: int,
) -> NodeRam:
    """Bytes of one node, from its class, inputs and the sizes of the nodes upstream."""
    node = graph[node_id]
    cls, inputs = node["class_type"], node["inputs"]
    upstream = _frames_in(graph, sizes, node_id)
    img, msk = dims.image, dims.mask

    def row(n: int, output: int, transient: int, what: str) -> NodeRam:
        return NodeRam(node_id, cls, n, output, transient, what)

    if cls in MODEL_OUTPUTS:
        return row(0, 0, 0, "model object (weights not counted)")
    if cls == "LoadImage":
        aw, ah = dims.avatar or (dims.width, dims.height)
        return row(0, ah * aw * 3 * F32 + 64 * 64 * F32, 0, "avatar IMAGE + 64x64 MASK (no alpha)")
    if cls == "ImageResizeKJv2":
        return row(0, img + msk, 0, "1 frame IMAGE + MASK")
    if cls == "CLIPVisionEncode":
        return row(0, CLIP_VISION, 0, "CLIP-H hidden states, embeds (float32)")
    if cls == "CLIPTextEncode":
        return row(0, TEXT_TOKENS * TEXT_DIM * F32, 0, "umt5 conditioning 1x512x4096")
    if cls == "LoadVideo":
        return row(0, 0, 0, "file handle")
    if cls == "GetVideoComponents":
        audio = int(frames / dims.fps * AUDIO_RATE) * AUDIO_CHANNELS * F32 if dims.audio else 0
        return row(
            frames, frames * img + audio, frames * img, "IMAGE (gbrpf32le frames) + audio; list stacked"
        )
    if cls == "ImageBatchReflectPad":
        n = int(inputs["length"])
        return row(n, n * img, 0, "IMAGE, padded (index_select copy)")
    if cls == "PoseAndFaceDetection":
        return row(
            upstream, upstream * dims.face, upstream * dims.face, "face crops 512x512 float32; list stacked"
        )
    if cls == "DrawViTPose":
        return row(upstream, upstream * img, upstream * img * 3 // 2, "IMAGE; uint8 list + stack + float")
    if cls in ("Sam2SegmentationReleased", "Sam2Segmentation"):
        # common_upscale to 1024x1024 returns channels-last memory; init_state's .contiguous() copies it
        resized = 2 * upstream * SAM2_SIZE * SAM2_SIZE * 3 * F32
        return row(
            upstream, upstream * msk, resized + upstream * msk // 2, "MASK; 2 copies at 1024x1024, bool masks"
        )
    if cls == "GrowMaskWithBlur":
        return row(upstream, 2 * upstream * msk, 2 * upstream * msk, "MASK + inverted; list + stack")
    if cls == "BlockifyMask":
        return row(upstream, upstream * msk, upstream * msk, "MASK; zeros_like + clamp")
    if cls == "DrawMaskOnImage":
        return row(
            upstream, upstream * img, 2 * upstream * img + upstream * msk, "IMAGE; clones + list + stack"
        )
    if cls in ANIMATE:
        length = int(inputs["length"])
        lat = (length - 1) // 4 + 1
        cond = dims.latent(lat + 1) + dims.latent(lat + 1) // 4 + dims.latent(lat) + 2 * length * dims.face
        encode = length * img * (3 if dims.vae_bf16 else 2) // 2  # x*2-1, then the bf16 copy
        transient = 3 * length * img + encode + length * dims.face  # image, pose and background resized
        what = f"cond: latents, mask, face pixels x2; {length}-frame latent"
        return row(length, cond + dims.latent(lat + 1), transient, what)
    if cls == "KSampler":
        parent = _link(inputs["latent_image"])
        n = sizes[parent].frames if parent in sizes else 0
        lat = dims.latent((n - 1) // 4 + 2)
        return row(n, lat, lat, "LATENT on the CPU; noise made on the CPU")
    if cls == "TrimVideoLatent":
        return row(upstream, 0, 0, "LATENT view (no copy)")
    if cls == "VAEDecode":
        return row(upstream, upstream * img, 0, "IMAGE, preallocated on the CPU")
    if cls == "ImageFromBatch":
        n = min(
            int(inputs["length"]),
            upstream - (inputs["batch_index"] if isinstance(inputs["batch_index"], int) else 0),
        )
        if not isinstance(inputs["batch_index"], int):  # a window's trim: drop motion frames
            animate = _link(inputs["batch_index"])
            motion = int(graph[animate]["inputs"]["continue_motion_max_frames"]) if animate else 1
            trim = max(0, ((motion - 1) // 4 + 1) * 4 - 3)  # WanAnimateToVideo's trim_image output
            n = min(int(inputs["length"]), upstream - trim)
        return row(n, n * img, 0, "IMAGE clone")
    if cls == "BatchImagesNode":
        n = sum(sizes[p].frames for v in inputs.values() if (p := _link(v)) in sizes)
        return row(n, n * img, 0, "IMAGE: torch.cat of the windows")
    if cls == "CreateVideo":
        return row(upstream, 0, 0, "VIDEO: references the frames")
    if cls == "WanWorkerLoadMotionFrames":
        n = motion_frames(graph)
        return row(n, n * img, 0, f"IMAGE: the previous chunk's last {n} frames, float32 (safetensors)")
    if cls == "WanWorkerSaveChunk":
        # quantize() a block of SAVE_BLOCK_FRAMES at a time: images * 255 and its .clamp(0, 255) are
        # float32 copies of the block, then its uint8 bytes; the motion tail is a view written from
        # its pointer. Returns no outputs.
        parent = _link(inputs["images"])
        n = sizes[parent].frames if parent in sizes else 0
        block = min(n, SAVE_BLOCK_FRAMES)
        return row(
            0, 0, 2 * block * img + block * img // 4, "no outputs; 16 frames at a time: x*255, clamp, uint8"
        )
    if cls == "SaveVideo":
        return row(0, 0, 9 * img // 4 + X264_BUFFERS, "one frame at a time (x255, clamp, uint8) + x264")
    return row(upstream, 0, 0, f"class {cls} not modelled: 0")


def motion_frames(graph: Mapping[str, Mapping[str, Any]]) -> int:
    """Frames a chunk hands on (the save node's motion_frames: the same in every chunk's graph)."""
    for node in graph.values():
        if node["class_type"] == "WanWorkerSaveChunk" and isinstance(
            node["inputs"].get("motion_frames"), int
        ):
            return int(node["inputs"]["motion_frames"])
    return MOTION_FRAMES


@dataclass
class Prompt:
    frames: int  # driving frames of the video the prompt loads (the clip, or a chunk's slice)
    padded: int
    windows: int
    nodes: list[NodeRam]  # cache hits first (not run), then the nodes run, in order
    cached_peak: int
    cached_at: str
    floor_peak: int
    floor_at: str
    held_at_end: int

    @property
    def order(self) -> list[str]:
        """The nodes it runs, in order (cache hits left out)."""
        return [n.node for n in self.nodes if n.ran]


def model_graph(
    graph: Mapping[str, Mapping[str, Any]],
    frames: int,
    dims: Dims,
    order: Iterable[str] | None = None,
    cached: Iterable[str] = (),
) -> Prompt:
    """One prompt of ``frames`` driving frames. ``cached``: nodes that are hits in the output cache
    (held from the start, not run)."""
    hits = [nid for nid in graph if nid in set(cached)]
    order = list(order) if order is not None else comfy_order(graph, cached=hits)
    full = [*hits, *order]  # hits are sized (and held) as if they had run first
    sizes: dict[str, NodeRam] = {}
    for node_id in full:
        sizes[node_id] = node_ram(graph, node_id, sizes, dims, frames)
    for node_id in hits:
        sizes[node_id].ran, sizes[node_id].transient = False, 0
    for node_id in full:
        for value in graph[node_id]["inputs"].values():
            parent = _link(value)
            if parent in sizes:
                sizes[parent].consumers.append(node_id)
    cached_peak = floor = 0
    cached_at = floor_at = ""
    held = 0
    for index, node_id in enumerate(full):
        this = sizes[node_id]
        held += this.output
        if held + this.transient > cached_peak:
            cached_peak, cached_at = held + this.transient, node_id
        later = set(full[index:])
        live = sum(s.output for nid, s in sizes.items() if nid in full[:index] and later & set(s.consumers))
        if live + this.output + this.transient > floor:
            floor, floor_at = live + this.output + this.transient, node_id
    padded = max((s.frames for s in sizes.values() if s.class_type == "ImageBatchReflectPad"), default=frames)
    windows = sum(1 for s in sizes.values() if s.class_type in ANIMATE)
    nodes = [sizes[nid] for nid in full]
    return Prompt(frames, padded, windows, nodes, cached_peak, cached_at, floor, floor_at, held)


def worker_graph(frames: int) -> dict[str, Any]:
    """The one-prompt graph for ``frames`` (K = 0; what a clip of at most K windows also gets)."""
    from worker.graph.workflow import Workflow

    workflow = Workflow.load(WORKFLOW)
    return workflow.build(workflow.example_params(frames))


# ------------------------------------------------------------------------------------ chunked jobs
@dataclass(frozen=True)
class ChunkGraph:
    chunk: Any  # worker.graph.chunks.Chunk
    graph: dict[str, Any]
    driving_frames: int  # frames of the video its LoadVideo reads: the clip, or the chunk's slice
    audio: bool  # that video has the driving audio (one prompt: the conformed video; a slice has none)


def worker_names(index: int) -> dict[str, str]:
    """A chunk prompt's input names as ``Job._run_prompt`` makes them: a fresh folder per prompt."""
    attempt = f"wan-worker/job-{index:04d}"
    return {
        "image": f"{attempt}/avatar.png",
        "driving_video": f"{attempt}/driving.mp4",
        "motion": f"{attempt}/motion.safetensors",
        "filename_prefix": attempt,
    }


def chunk_graphs(
    frames: int,
    chunk_windows: int | None,
    *,
    workflow_path: Path = WORKFLOW,
    overrides: Mapping[str, str] | None = None,
    width: int = 1280,
    height: int = 720,
    names: Callable[[int], dict[str, str]] = worker_names,
) -> list[ChunkGraph]:
    """The prompts the worker submits for a clip of ``frames`` frames with ``CHUNK_WINDOWS=K``
    (``Job._generate`` / ``_run_prompt``): ``Workflow.chunks``, then per chunk ``build(chunk=...)``
    (``chunk=None`` when the clip is one chunk), ``params.frames`` = the frames the chunk adds, the
    driving video = the chunk's slice (video only, ``cut_slice``) or the whole conformed clip.
    ``chunk_windows`` None: the workflow's own ``windows.chunk_windows``."""
    from worker.graph.workflow import Workflow, WorkflowParams

    workflow = Workflow.load(workflow_path, overrides or {})
    result = []
    for chunk in workflow.chunks(frames, chunk_windows=chunk_windows):
        chunked = chunk.count > 1
        name = names(chunk.index)
        params = WorkflowParams(
            image=name["image"],
            driving_video=name["driving_video"],
            frames=chunk.frames,
            filename_prefix=name["filename_prefix"],
            seed=int(workflow.defaults.get("seed", 42)),
            prompt=str(workflow.defaults.get("prompt", "")),
            negative_prompt=str(workflow.defaults.get("negative_prompt", "")),
            width=width,
            height=height,
            fps=24.0,
        )
        graph = workflow.build(
            params,
            chunk=chunk if chunked else None,
            clip_frames=frames,
            motion_file=name["motion"] if chunk.continues else None,
        )
        driving = chunk.slice_frames if chunked else frames
        result.append(ChunkGraph(chunk, graph, driving, audio=not chunked))
    return result


def signatures(graph: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each node's output-cache key, as ``CacheKeySetInputSignature`` makes it: its class, its constant
    inputs and its ancestors' keys (a Merkle digest here, so node ids do not matter). File inputs are
    compared by name (the worker's names are fresh per prompt, so ``IS_CHANGED`` decides nothing more)."""
    keys: dict[str, str] = {}

    def key(node_id: str) -> str:
        if node_id in keys:
            return keys[node_id]
        node = graph[node_id]
        parts: list[Any] = [node["class_type"]]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            parent = _link(value)
            parts.append([name, ["link", key(parent), value[1]] if parent in graph else value])
        keys[node_id] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return keys[node_id]

    for node_id in graph:
        key(node_id)
    return keys


def cache_hits(
    previous: Mapping[str, Mapping[str, Any]] | None, graph: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """Nodes of ``graph`` whose output the previous prompt left in the cache (same signature)."""
    if previous is None:
        return set()
    before = set(signatures(previous).values())
    return {nid for nid, sig in signatures(graph).items() if sig in before}


@dataclass
class Job:
    frames: int
    chunk_windows: int | None
    chunks: list[ChunkGraph]
    prompts: list[Prompt]
    transitions: list[int]  # per prompt after the first: the previous prompt's outputs + its first node

    @property
    def cached_peak(self) -> int:
        return max([p.cached_peak for p in self.prompts] + self.transitions)

    @property
    def floor_peak(self) -> int:
        return max(p.floor_peak for p in self.prompts)

    @property
    def largest(self) -> int:
        """Index of the prompt with the highest default-cache peak."""
        return max(range(len(self.prompts)), key=lambda i: self.prompts[i].cached_peak)

    @property
    def at(self) -> str:
        """Where the job's default-cache peak is: 'chunk i, node n' or 'chunk i starting'."""
        best = self.largest
        transition = max(range(len(self.transitions)), key=lambda i: self.transitions[i], default=None)
        if transition is not None and self.transitions[transition] > self.prompts[best].cached_peak:
            return f"chunk {transition + 2} starting"
        return f"chunk {best + 1}, node {self.prompts[best].cached_at}"


def model_job(frames: int, chunk_windows: int | None, dims: Dims, **build: Any) -> Job:
    """Every prompt of a clip of ``frames`` frames run as chunks of ``chunk_windows`` windows
    (0: one prompt), in sequence on one ComfyUI: each prompt's hits in the previous one's outputs,
    and at each change of prompt the previous outputs held through the next prompt's first node."""
    chunks = chunk_graphs(frames, chunk_windows, **build)
    prompts: list[Prompt] = []
    transitions: list[int] = []
    previous: dict[str, Any] | None = None
    for item in chunks:
        hits = cache_hits(previous, item.graph)
        prompt_dims = replace(dims, audio=dims.audio and item.audio)
        prompt = model_graph(item.graph, item.driving_frames, prompt_dims, cached=hits)
        if prompts:
            first = next(n for n in prompt.nodes if n.ran)
            transitions.append(prompts[-1].held_at_end + first.output + first.transient)
        prompts.append(prompt)
        previous = item.graph
    return Job(frames, chunk_windows, chunks, prompts, transitions)


def by_class(prompt: Prompt) -> list[tuple[str, int, int, int, int]]:
    """(class, nodes, frames of the largest, output bytes, largest transient) per class, in order."""
    rows: dict[str, list[int]] = {}
    for n in prompt.nodes:
        r = rows.setdefault(n.class_type, [0, 0, 0, 0])
        r[0] += 1
        r[1] = max(r[1], n.frames)
        r[2] += n.output
        r[3] = max(r[3], n.transient)
    return [(c, *v) for c, v in rows.items() if v[2] or v[3]]  # type: ignore[misc]


def _gb(value: int) -> str:
    return f"{value / GB:.2f}"


def render(prompts: list[Prompt], dims: Dims, labels: list[str] | None = None) -> str:
    """Per class: output and largest transient, one column per prompt (``labels``: the column heads)."""
    labels = labels or [f"{p.frames} fr" for p in prompts]
    head = " | ".join(f"{label}: out GB / transient GB" for label in labels)
    lines = [f"| class (nodes in the last column) | {head} |", "|---|" + "---:|" * len(prompts)]
    classes = {c: None for p in prompts for c, *_ in by_class(p)}
    table = [{c: (o, t, k) for c, k, _f, o, t in by_class(p)} for p in prompts]
    for c in classes:
        cells = [f"{_gb(t[c][0])} / {_gb(t[c][1])}" if c in t else "–" for t in table]
        count = table[-1].get(c, (0, 0, 0))[2]
        lines.append(f"| {c} ({count}) | " + " | ".join(cells) + " |")
    rows = [
        ("driving frames (padded) / windows", lambda p: f"{p.frames} ({p.padded}) / {p.windows}"),
        ("**all outputs held at the end** (GB)", lambda p: f"**{_gb(p.held_at_end)}**"),
        ("**peak, default cache** (GB) at node", lambda p: f"**{_gb(p.cached_peak)}** at {p.cached_at}"),
        ("**floor, cache evicting** (GB) at node", lambda p: f"**{_gb(p.floor_peak)}** at {p.floor_at}"),
        ("peak per driving frame (MB), cached / floor",
         lambda p: f"{p.cached_peak / p.frames / 1e6:.1f} / {p.floor_peak / p.frames / 1e6:.1f}"),
    ]  # fmt: skip
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(p) for p in prompts) + " |")
    lines.append("")
    lines.append(
        f"{dims.width}x{dims.height} float32: IMAGE {dims.image / 1e6:.2f} MB a frame, "
        f"MASK {dims.mask / 1e6:.2f} MB, face crop {dims.face / 1e6:.2f} MB; GB = 1e9 bytes. "
        "Model weights and the process baseline not counted."
    )
    return "\n".join(lines)


def _seconds(frames: int) -> str:
    return f"{frames / 24:.0f} s"


def chunk_rows(jobs: Mapping[tuple[int, int], Job], frames: list[int], ks: Iterable[int]) -> list[str]:
    """The rows of ``render_chunks``' table, one per K (tests compare bench/README.md with them)."""
    rows = []
    for k in ks:
        cells = []
        for n in frames:
            job = jobs[(n, k)]
            cells.append(f"**{_gb(job.cached_peak)}** / {_gb(job.floor_peak)} · {len(job.prompts)}")
        largest = jobs[(frames[-1], k)].prompts[jobs[(frames[-1], k)].largest]
        name = "0 (one prompt)" if k == 0 else str(k)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {largest.frames} / {largest.windows} |")
    return rows


def render_chunks(jobs: Mapping[tuple[int, int], Job], frames: list[int], ks: Iterable[int]) -> str:
    """Per K windows a prompt and clip length: the job's peak on the default cache / floor · prompts."""
    ks = list(ks)
    head = " | ".join(f"{n} fr ({_seconds(n)})" for n in frames)
    lines = [
        f"| K windows a prompt | {head} | largest prompt at {frames[-1]} fr: driving frames / windows |",
        "|---|" + "---:|" * (len(frames) + 1),
        *chunk_rows(jobs, frames, ks),
        "",
        "Each cell: **the job's peak on the default cache** / floor with the cache evicting (GB) · prompts. "
        "The peak is the largest prompt's or, at a change of prompt, the previous prompt's outputs plus the "
        "next one's first node; both grow with K, not with the clip, once the clip has more than K windows.",
    ]
    for k in ks:
        where = "; ".join(f"{n} fr: {jobs[(n, k)].at}" for n in frames)
        lines.append(f"K = {k}: peak at {where}.")
    return "\n".join(lines)


def render_nodes(prompt: Prompt) -> str:
    lines = ["| node | class | frames | output MB | transient MB | what |", "|---:|---|---:|---:|---:|---|"]
    for n in prompt.nodes:
        what = n.what if n.ran else f"cache hit (not run): {n.what}"
        sizes = f"{n.output / 1e6:.1f} | {n.transient / 1e6:.1f}"
        lines.append(f"| {n.node} | {n.class_type} | {n.frames} | {sizes} | {what} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- validation
def cached_bytes(outputs: Any, seen: set[int]) -> int:
    """Bytes of CPU tensor storages reachable from a cache entry's outputs, storages in ``seen`` skipped."""
    import torch

    total = 0
    stack = [outputs]
    visited: set[int] = set()
    while stack:
        value = stack.pop()
        if id(value) in visited:
            continue
        visited.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                continue
            storage = value.untyped_storage()
            key = storage.data_ptr()
            if key not in seen and storage.nbytes():
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif type(value).__name__ == "Output":  # comfy.clip_vision.Output
            stack.extend(vars(value).values())
    return total


def toy_names(index: int) -> dict[str, str]:
    """--validate: each prompt's inputs under a fresh name, as the worker uploads them."""
    return {
        "image": f"host-ram/c{index}/avatar.png",
        "driving_video": f"host-ram/c{index}/driving.mp4",
        "motion": f"host-ram/c{index}/motion.safetensors",
        "filename_prefix": f"host-ram/c{index}",
    }


def make_slice_video(path: Path, *, frames: int, width: int, height: int, fps: int = 24) -> Path:
    """A chunk's driving slice as ``cut_slice`` writes it: H.264 yuv420p, video only (no audio)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            rgb = np.stack(
                [(x + 4 * index) % 256, (y + 4 * index) % 256, np.full_like(x, 3 * index % 256)], -1
            )
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def validate(
    comfy: Path, frames: int, out: Path, extra: list[str] | None = None, chunk_windows: int = 0
) -> int:
    """The pinned graph at toy size (``gpu_bench --tiny --cpu`` setup: 64x64, stand-ins for the packs),
    as the prompts of a job of ``frames`` frames in chunks of ``chunk_windows`` windows (0: one
    prompt), run one after the other by one ComfyUI executor, as the worker runs them. After each
    prompt every node's cached CPU tensor bytes are compared with the model's, the nodes ComfyUI did
    not run with the cache hits the model predicts, its order with ``comfy_order``; at each change of
    prompt, the previous prompt's entries still in the cache before and after the first node."""
    import psutil

    from bench import gpu_bench

    opts = gpu_bench.parse_args(
        ["--comfy", str(comfy), "--tiny", "--cpu", "--frames", str(frames), "--steps", "1", "--mode", "clip",
         "--out", str(out), *(extra or [])]
    )  # fmt: skip
    opts.out.mkdir(parents=True, exist_ok=True)
    results = gpu_bench.Results(opts.out)
    from bench.gpu.runtime import ComfyRuntime, set_env_defaults

    set_env_defaults()
    runtime = ComfyRuntime(opts.comfy, cpu=True, work_dir=opts.work)
    runtime.start()
    import folder_paths
    import torch

    runtime.load_custom_node(gpu_bench.ATTENTION_NODE)
    runtime.load_custom_node(gpu_bench.GRAPH_NODES)
    chunks = chunk_graphs(
        frames, chunk_windows, workflow_path=opts.workflow, overrides={"WAN_STEPS": "1"},
        width=opts.width, height=opts.height, names=toy_names,
    )  # fmt: skip
    stand_ins = gpu_bench.register_stand_ins(chunks[0].graph, True, results)
    runtime.server.stand_ins = stand_ins
    graphs = [gpu_bench.override_inputs(c.graph, opts, results, stand_ins) for c in chunks]
    gpu_bench.make_inputs(opts)  # bench_avatar.png and the whole clip (H.264 + AAC) in the input folder
    gpu_bench.make_models(opts, graphs[0], torch.device("cpu"), results, stand_ins)
    input_dir, output_dir = (
        Path(folder_paths.get_input_directory()),
        Path(folder_paths.get_output_directory()),
    )
    cache = runtime.executor.caches.outputs

    def old_entries() -> tuple[int, int]:
        """(entries, CPU tensor bytes) the cache holds from earlier prompts (not used by this one): the
        bytes their eviction frees, so storages a current entry also holds (the text conditioning
        inside the old conditioning) are not counted."""
        items = list(cache.cache.items())
        current = [e for k, e in items if cache.used_generation.get(k, 0) >= cache.generation]
        old = [e for k, e in items if cache.used_generation.get(k, 0) < cache.generation]
        seen: set[int] = set()
        for entry in current:
            cached_bytes(entry.outputs, seen)
        return len(old), sum(cached_bytes(e.outputs, seen) for e in old)

    events: list[tuple[str, int, int, bool]] = []  # (node starting, old entries, old bytes, eviction due)
    record = runtime.server.send_sync

    def send_sync(event: str, data: Any, sid: str | None = None) -> None:
        if event == "executing" and isinstance(data, dict) and data.get("node") is not None:
            due = psutil.virtual_memory().available < runtime.executor.cache_args["ram_inactive"] * 1024**3
            events.append((str(data["node"]), *old_entries(), due))
        record(event, data, sid)

    runtime.server.send_sync = send_sync
    lines = [f"# toy job: {opts.width}x{opts.height}, {frames} frames, chunk_windows {chunk_windows}, "
             f"{len(chunks)} prompt(s), run in sequence by one PromptExecutor", ""]  # fmt: skip
    agree = True
    previous: Prompt | None = None
    for number, (item, graph) in enumerate(zip(chunks, graphs, strict=True), start=1):
        name = toy_names(number)
        (input_dir / name["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(input_dir / "bench_avatar.png", input_dir / name["image"])
        if item.audio:  # the whole conformed clip, audio included
            shutil.copy(input_dir / "bench_driving.mp4", input_dir / name["driving_video"])
        else:  # a chunk's slice
            make_slice_video(input_dir / name["driving_video"], frames=item.driving_frames,
                             width=opts.width, height=opts.height)  # fmt: skip
        if item.chunk.continues:
            motion = sorted((output_dir / "host-ram").glob(f"c{number - 1}_*.motion.safetensors"))
            if not motion:
                raise SystemExit(f"prompt {number - 1} saved no motion frames for prompt {number}")
            shutil.copy(motion[-1], input_dir / name["motion"])
        hits = cache_hits(chunks[number - 2].graph if number > 1 else None, item.graph)
        events.clear()
        runs, _ = runtime.run(graph)
        order = [r.node for r in runs]
        measured: dict[str, int] = {}
        seen: set[int] = set()
        for node_id in [*[n for n in graph if n in hits], *order]:
            entry = cache.get_local(node_id)
            measured[node_id] = cached_bytes(entry.outputs, seen) if entry is not None else -1
        dims = Dims(width=opts.width, height=opts.height, avatar=(96, 128), vae_bf16=False, audio=item.audio)
        not_run = set(graph) - set(order)
        emulated = comfy_order(graph, cached=hits)
        model = model_graph(graph, item.driving_frames, dims, order=order, cached=not_run)
        predicted = {n.node: n for n in model.nodes}
        c = item.chunk
        video = "the clip, with audio" if item.audio else "a slice"
        start = "continues from the previous prompt" if c.continues else "starts the clip"
        lines += [
            f"## prompt {number} of {len(chunks)}: windows {max(c.first_window, 1)}-"
            f"{max(c.first_window, 1) + len(c.windows) - 1} of the clip, {item.driving_frames} driving "
            f"frames ({video}), {c.frames} frames out, {start}",
            "",
            "| node | class | predicted B | in ComfyUI's cache B | diff |",
            "|---:|---|---:|---:|---:|",
        ]
        worst = 0.0
        for node_id in measured:
            p, m = predicted[node_id].output, measured[node_id]
            diff = (m - p) / max(p, 1)
            if p >= 1024 or m >= 1024:
                worst = max(worst, abs(diff))
            hit = "" if predicted[node_id].ran else " (cache hit)"
            lines.append(
                f"| {node_id} | {graph[node_id]['class_type']}{hit} | {p} | {m} | {diff * 100:+.1f} % |"
            )
        total_p, total_m = model.held_at_end, sum(v for v in measured.values() if v > 0)
        same_hits = not_run == hits
        lines += [
            "",
            f"all outputs held at the end: predicted {total_p} B, in the cache {total_m} B "
            f"({(total_m - total_p) / total_p * 100:+.2f} %); worst node (>= 1 KiB) {worst * 100:.1f} %",
            f"cache hits: ComfyUI did not run {' '.join(sorted(not_run, key=int)) or 'none'}; "
            + (
                "the model predicts the same"
                if same_hits
                else f"the model: {' '.join(sorted(hits, key=int))} (DIFFERENT)"
            ),
            f"execution order: ComfyUI ran {' '.join(order)}; comfy_order() gives "
            + ("the same" if emulated == order else " ".join(emulated) + " (DIFFERENT)"),
        ]
        agree &= (
            worst <= 0.02 and abs(total_m - total_p) <= 0.01 * total_p and emulated == order and same_hits
        )
        if previous is not None:
            expected = previous.held_at_end - sum(n.output for n in model.nodes if not n.ran)
            (first, count0, bytes0, _), (second, count1, bytes1, due) = events[0], events[1]
            held_ok = abs(bytes0 - expected) <= 0.01 * max(expected, 1)
            lines.append(
                f"the previous prompt's entries (not hits here) while node {first}, the first, runs: "
                f"{count0} holding {bytes0} B (predicted {expected} B); when node {second} starts: "
                f"{count1} holding {bytes1} B ({'evicted, as predicted' if bytes1 == 0 else 'NOT evicted'}"
                f"{'' if due else '; more free than ram_inactive, no eviction due'})"
            )
            agree &= held_ok and (bytes1 == 0 or not due)
        lines.append("")
        previous = model
    text = "\n".join(lines)
    (opts.out / "host_ram_validation.md").write_text(text + "\n")
    print(text, flush=True)
    return 0 if agree else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="*", default=[240, 721, 1440])
    parser.add_argument("--chunks", action="store_true", help="the per-K table (K = --k) for each --frames")
    parser.add_argument("--k", type=int, nargs="*", default=list(CHUNK_WINDOWS), help="--chunks: K values")
    parser.add_argument(
        "--chunk-windows", type=int, default=0,
        help="without --chunks: the prompts of a job in chunks of K windows (0: one prompt, the default)",
    )  # fmt: skip
    parser.add_argument("--nodes", action="store_true", help="also print every node of the last --frames")
    parser.add_argument("--validate", action="store_true", help="toy run through ComfyUI (needs --comfy)")
    parser.add_argument("--comfy", type=Path, help="ComfyUI 0.33.0 checkout (--validate)")
    parser.add_argument("--toy-frames", type=int, default=80, help="--validate: driving frames (2 windows)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/host-ram"))
    parser.add_argument("--work", help="--validate: gpu_bench's --work (ComfyUI's input/output folders)")
    parser.add_argument("--models", help="--validate: gpu_bench's --models (the toy model files)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.validate:
        if opts.comfy is None:
            raise SystemExit("--validate needs --comfy DIR")
        extra = [a for k in ("work", "models") if getattr(opts, k) for a in (f"--{k}", getattr(opts, k))]
        return validate(opts.comfy, opts.toy_frames, opts.out, extra, chunk_windows=opts.chunk_windows)
    dims = Dims()
    if opts.chunks:
        jobs = {(n, k): model_job(n, k, dims) for n in opts.frames for k in opts.k}
        print(render_chunks(jobs, opts.frames, opts.k))
        last = opts.frames[-1]
        largest = [jobs[(last, k)].prompts[jobs[(last, k)].largest] for k in opts.k]
        print(f"\nThe largest prompt of each K at {last} frames:\n")
        print(render(largest, dims, labels=[f"K={k}" if k else "one prompt" for k in opts.k]))
        return 0
    job_list = [model_job(n, opts.chunk_windows, dims) for n in opts.frames]
    prompts = [job.prompts[job.largest] for job in job_list]
    labels = [f"{n} fr" if len(j.prompts) == 1 else f"{n} fr, chunk {j.largest + 1} of {len(j.prompts)}"
              for n, j in zip(opts.frames, job_list, strict=True)]  # fmt: skip
    print(render(prompts, dims, labels=labels))
    if opts.nodes:
        print("\n" + render_nodes(prompts[-1]))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)
