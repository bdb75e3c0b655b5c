"""Host RAM of one prompt of the pinned Wan2.2 Animate graph, before chunking: a table, no GPU.

    python bench/host_ram.py                          # 240, 721 and 1440 frames at 1280x720
    python bench/host_ram.py --frames 240 --nodes     # every node's row too
    python bench/host_ram.py --validate --comfy DIR   # toy run through ComfyUI's executor, compared

The graph is the worker's own (``Workflow.load(...).build(example_params(N))``). For each node,
in the order ComfyUI's executor runs that graph (``comfy_order``), the model gives the bytes of
the CPU tensors its outputs add (a view of an input adds nothing) and the transient working set
inside the node, both read from the pinned node code (ComfyUI 0.33.0, WanAnimatePreprocess,
segment-anything-2, KJNodes; ``node_ram`` and each row's "what" say which tensors). Two peaks:

* **cached**: ComfyUI's default cache (``RAMPressureCache``, what ``main.py`` starts) keeps every
  node output of the prompt until the prompt ends (and until the next prompt's first node has run).
  Peak = max over nodes of (outputs of every node run so far + this node's transient).
* **floor**: under RAM pressure the cache evicts entries of >= 512 MB once less than its headroom
  (10 % of RAM, 2-10 GB) is free, but ``ExecutionList.execution_cache`` still holds every output a
  pending node will read. Peak = max over nodes of (outputs still to be read + this node's output
  and transient): no host with less RAM than this can run the prompt at all.

Model weights (DiT, umt5, VAE, CLIP-H, ONNX, SAM2) and the Python/torch baseline are not counted:
they do not grow with the video. Latents and conditioning are counted: ComfyUI keeps them on
``intermediate_device()``, the CPU (only ``--gpu-only`` puts them on the GPU).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

F32 = 4
FACE = 512  # PoseAndFaceDetection's crops (cv2.resize to 512x512) and WanAnimateToVideo's face_video_pixels
SAM2_SIZE = 1024  # Sam2Segmentation (video) resizes the frames to model.image_size first thing
LATENT_CHANNELS = 16
TEXT_TOKENS, TEXT_DIM = 512, 4096  # umt5-xxl conditioning as CLIPTextEncode returns it for Wan
CLIP_VISION = (2 * 257 * 1280 + 1024) * F32  # last_hidden_state, penultimate_hidden_states, image_embeds
AUDIO_RATE, AUDIO_CHANNELS = 48000, 2  # the conformed driving video's audio, float32 planar
X264_BUFFERS = 64 * 2**20  # SaveVideo: libx264 lookahead/reference frames (estimate, not a tensor)
GB = 1e9

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


def _link(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0])
    return None


def comfy_order(
    graph: Mapping[str, Mapping[str, Any]], output_classes: Iterable[str] = ("SaveVideo",)
) -> list[str]:
    """The order ComfyUI 0.33.0 runs a fresh prompt in (nothing cached, no async or lazy inputs):
    ``TopologicalSort.add_node`` from each output node (depth-first, a stack, so pending nodes are in
    that visiting order), then ``ExecutionList.ux_friendly_pick_node`` among the ready nodes: an
    output node first, then one that blocks an output node, then one two links from it, else the
    first ready one. ``--validate`` checks it against the order the executor really ran."""
    outputs = set(output_classes)
    pending: dict[str, bool] = {}
    blocks: dict[str, int] = {}
    blocking: dict[str, dict[str, bool]] = {}
    for start in [nid for nid, node in graph.items() if node["class_type"] in outputs]:
        stack, links = [start], []
        while stack:
            uid = stack.pop()
            if uid in pending:
                continue
            pending[uid], blocks[uid], blocking[uid] = True, 0, {}
            for value in graph[uid]["inputs"].values():
                if (parent := _link(value)) in graph:
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
    if cls == "SaveVideo":
        return row(0, 0, 9 * img // 4 + X264_BUFFERS, "one frame at a time (x255, clamp, uint8) + x264")
    return row(upstream, 0, 0, f"class {cls} not modelled: 0")


@dataclass
class Prompt:
    frames: int
    padded: int
    windows: int
    nodes: list[NodeRam]
    cached_peak: int
    cached_at: str
    floor_peak: int
    floor_at: str
    held_at_end: int


def model_graph(
    graph: Mapping[str, Mapping[str, Any]], frames: int, dims: Dims, order: Iterable[str] | None = None
) -> Prompt:
    order = list(order) if order is not None else comfy_order(graph)
    sizes: dict[str, NodeRam] = {}
    for node_id in order:
        sizes[node_id] = node_ram(graph, node_id, sizes, dims, frames)
    for node_id in order:
        for value in graph[node_id]["inputs"].values():
            parent = _link(value)
            if parent in sizes:
                sizes[parent].consumers.append(node_id)
    cached = floor = 0
    cached_at = floor_at = ""
    held = 0
    for index, node_id in enumerate(order):
        this = sizes[node_id]
        held += this.output
        if held + this.transient > cached:
            cached, cached_at = held + this.transient, node_id
        later = set(order[index:])
        live = sum(s.output for nid, s in sizes.items() if nid in order[:index] and later & set(s.consumers))
        if live + this.output + this.transient > floor:
            floor, floor_at = live + this.output + this.transient, node_id
    padded = max((s.frames for s in sizes.values() if s.class_type == "ImageBatchReflectPad"), default=frames)
    windows = sum(1 for s in sizes.values() if s.class_type in ANIMATE)
    nodes = [sizes[nid] for nid in order]
    return Prompt(frames, padded, windows, nodes, cached, cached_at, floor, floor_at, held)


def worker_graph(frames: int) -> dict[str, Any]:
    from worker.workflow import Workflow

    workflow = Workflow.load(ROOT / "workflows" / "wan22_animate_replace.json")
    return workflow.build(workflow.example_params(frames))


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


def render(prompts: list[Prompt], dims: Dims) -> str:
    head = " | ".join(f"{p.frames} fr: out GB / transient GB" for p in prompts)
    lines = [f"| class (nodes at {prompts[-1].frames} fr) | {head} |", "|---|" + "---:|" * len(prompts)]
    classes = {c: None for p in prompts for c, *_ in by_class(p)}
    table = [{c: (o, t, k) for c, k, _f, o, t in by_class(p)} for p in prompts]
    for c in classes:
        cells = [f"{_gb(t[c][0])} / {_gb(t[c][1])}" if c in t else "–" for t in table]
        count = table[-1].get(c, (0, 0, 0))[2]
        lines.append(f"| {c} ({count}) | " + " | ".join(cells) + " |")
    rows = [
        ("padded frames / windows", lambda p: f"{p.padded} / {p.windows}"),
        ("**all outputs held at the end** (GB)", lambda p: f"**{_gb(p.held_at_end)}**"),
        ("**peak, default cache** (GB) at node", lambda p: f"**{_gb(p.cached_peak)}** at {p.cached_at}"),
        ("**floor, cache evicting** (GB) at node", lambda p: f"**{_gb(p.floor_peak)}** at {p.floor_at}"),
        ("peak per driving frame (MB), cached / floor",
         lambda p: f"{p.cached_peak / p.frames / 1e6:.1f} / {p.floor_peak / p.frames / 1e6:.1f}"),
    ]  # fmt: skip
    for label, cell in rows:
        if label.startswith("peak per"):
            pairs = list(zip([None, *prompts], prompts, strict=False))
            marginal = [
                "–" if a is None else f"{(b.cached_peak - a.cached_peak) / (b.frames - a.frames) / 1e6:.1f}"
                for a, b in pairs
            ]
            lines.append("| peak per extra driving frame (MB), cached, vs the column before | "
                         + " | ".join(marginal) + " |")  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cell(p) for p in prompts) + " |")
    lines.append("")
    lines.append(
        f"{dims.width}x{dims.height} float32: IMAGE {dims.image / 1e6:.2f} MB a frame, "
        f"MASK {dims.mask / 1e6:.2f} MB, face crop {dims.face / 1e6:.2f} MB; GB = 1e9 bytes. "
        "Model weights and the process baseline not counted."
    )
    return "\n".join(lines)


def render_nodes(prompt: Prompt) -> str:
    lines = ["| node | class | frames | output MB | transient MB | what |", "|---:|---|---:|---:|---:|---|"]
    for n in prompt.nodes:
        lines.append(
            f"| {n.node} | {n.class_type} | {n.frames} | {n.output / 1e6:.1f} | "
            f"{n.transient / 1e6:.1f} | {n.what} |"
        )
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


def validate(comfy: Path, frames: int, out: Path, extra: list[str] | None = None) -> int:
    """The pinned graph at toy size (``gpu_bench --tiny --cpu`` setup: 64x64, stand-ins for the packs),
    run by ComfyUI's executor; every node's cached CPU tensor bytes compared with the model's."""
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
    import torch

    runtime.load_custom_node(gpu_bench.ATTENTION_NODE)
    runtime.load_custom_node(gpu_bench.GRAPH_NODES)
    graph, _ = gpu_bench.build_graph(opts)
    runtime.server.stand_ins = gpu_bench.register_stand_ins(graph, True, results)
    graph = gpu_bench.override_inputs(graph, opts, results, runtime.server.stand_ins)
    gpu_bench.make_inputs(opts)
    gpu_bench.make_models(opts, graph, torch.device("cpu"), results, runtime.server.stand_ins)
    process = psutil.Process()
    rss: dict[str, int] = {}
    runtime.server.on_node = lambda run: rss.__setitem__(run.node, process.memory_info().rss)
    before = process.memory_info().rss
    runs, _ = runtime.run(graph)
    order = [r.node for r in runs]
    measured: dict[str, int] = {}
    seen: set[int] = set()
    cache = runtime.executor.caches.outputs
    for node_id in order:
        entry = cache.get_local(node_id)
        measured[node_id] = cached_bytes(entry.outputs, seen) if entry is not None else -1
    dims = Dims(width=opts.width, height=opts.height, avatar=(96, 128), vae_bf16=False)
    emulated = comfy_order(graph)
    model = model_graph(graph, frames, dims, order=order)
    predicted = {n.node: n for n in model.nodes}
    lines = [
        f"# toy run: {opts.width}x{opts.height}, {frames} frames, {model.windows} windows, "
        f"padded {model.padded}",
        "",
        "| node | class | predicted B | in ComfyUI's cache B | diff |",
        "|---:|---|---:|---:|---:|",
    ]
    worst = 0.0
    for node_id in order:
        p, m = predicted[node_id].output, measured[node_id]
        diff = (m - p) / max(p, 1)
        if p >= 1024 or m >= 1024:
            worst = max(worst, abs(diff))
        lines.append(f"| {node_id} | {graph[node_id]['class_type']} | {p} | {m} | {diff * 100:+.1f} % |")
    total_p, total_m = model.held_at_end, sum(v for v in measured.values() if v > 0)
    lines += [
        "",
        f"all outputs held at the end: predicted {total_p} B, in the cache {total_m} B "
        f"({(total_m - total_p) / total_p * 100:+.2f} %); worst node (>= 1 KiB) {worst * 100:.1f} %",
        f"process RSS growth over the prompt: {(max(rss.values(), default=before) - before) / 1e6:.0f} MB "
        "(at toy size dominated by the models loaded, not the frames)",
        f"execution order: ComfyUI ran {' '.join(order)}; comfy_order() gives "
        + ("the same" if emulated == order else " ".join(emulated) + " (DIFFERENT)"),
    ]
    text = "\n".join(lines)
    (opts.out / "host_ram_validation.md").write_text(text + "\n")
    print(text, flush=True)
    agree = worst <= 0.02 and abs(total_m - total_p) <= 0.01 * total_p and emulated == order
    return 0 if agree else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs="*", default=[240, 721, 1440])
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
        return validate(opts.comfy, opts.toy_frames, opts.out, extra)
    dims = Dims()
    prompts = [model_graph(worker_graph(n), n, dims) for n in opts.frames]
    print(render(prompts, dims))
    if opts.nodes:
        print("\n" + render_nodes(prompts[-1]))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)
