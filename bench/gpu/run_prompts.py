#!/usr/bin/env python3
"""Prepared API graphs through ComfyUI's own executor, in turn, in one process, with the GPU
benchmark's machinery: what a test needs to run the worker's prompts for real at toy size.

    python bench/gpu/run_prompts.py --plan plan.json --out OUT --comfy /path/to/ComfyUI --tiny --cpu \\
        [--record VAEDecode] [any other bench/gpu_bench.py option: --models, --work, --packs, ...]

``plan.json``::

    {"output_node": "53",
     "prompts": [{"label": "single", "graph": {...}, "inputs": {"avatar.png": "/path/avatar.png", ...}},
                 {"label": "chunk-2", "graph": {...}, "inputs": {...}, "motion": "motion-2.safetensors",
                  "motion_from": "chunk-1"}]}

Setup is ``gpu_bench.py``'s (ComfyUI started as ``main.py`` starts it, this repository's nodes,
stand-ins for the pack classes not loaded, ``--tiny``'s text encoder, shape-true random model
files). Before each prompt its ``inputs`` are copied into ComfyUI's input folder under their
names and, with ``motion``, the motion frames file the prompt before it (or the one ``motion_from``
names) saved with ``WanWorkerSaveChunk`` is copied there under that name, as the worker uploads it.
Each graph is checked by ``validate_prompt`` and run by the one ``PromptExecutor`` (its cache is kept
between prompts, as in the worker's ComfyUI).

``--record CLASS`` (a classic node class, repeatable): for each node of that class, the first output
when it is a tensor, as ``OUT/<label>/<node>.npy`` (float32; e.g. every window's VAE decode), and a
SHA-256 of every tensor in its inputs and outputs (dtype, shape and bytes; e.g. a KSampler's
conditioning: concat latent and mask, pose latent, face pixels, and the latent it returns), too big
to keep. ``OUT/prompts.json`` lists per prompt: wall seconds, its UI outputs, the frames and motion
files it saved, the node runs, the nodes ComfyUI took from its cache, the recorded files and digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import gpu_bench  # noqa: E402
from bench.gpu import chunked, plan  # noqa: E402


def tensors_in(value: Any, name: str) -> dict[str, Any]:
    """Every torch tensor inside ``value`` (lists, tuples, dicts), by its path (``in.positive.0.1.x``)."""
    import torch

    if isinstance(value, torch.Tensor):
        return {name: value}
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return {}
    found: dict[str, Any] = {}
    for key, item in items:
        found.update(tensors_in(item, f"{name}.{key}"))
    return found


def digest(tensor: Any) -> str:
    import torch

    data = tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
    return (
        f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}:{hashlib.sha256(data).hexdigest()}"
    )


def record_outputs(runtime: Any, class_types: list[str], store: dict[str, Any]) -> None:
    """Wraps each class so that, for every node of it, ``store[node id]`` gets its first output and
    the digests of the tensors in its inputs and outputs."""
    import nodes

    for class_type in class_types:
        base = nodes.NODE_CLASS_MAPPINGS[class_type]
        function = base.FUNCTION
        original = getattr(base, function)

        def recorded(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            out = __original(self, *args, **kwargs)
            current = runtime.server.current
            if current is not None:
                tensors = {**tensors_in(kwargs, "in"), **tensors_in(list(out), "out")}
                store[current.node] = (out[0], {name: digest(t) for name, t in sorted(tensors.items())})
            return out

        nodes.NODE_CLASS_MAPPINGS[class_type] = type(class_type, (base,), {function: recorded})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--record", action="append", default=[], help="a node class whose outputs to keep")
    own, rest = parser.parse_known_args(argv)
    opts = gpu_bench.parse_args([*rest, "--mode", "clip"])
    opts.out.mkdir(parents=True, exist_ok=True)
    spec = json.loads(own.plan.read_text())
    results = gpu_bench.Results(opts.out)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.gpu.runtime import ComfyRuntime, set_env_defaults

    set_env_defaults()
    runtime = ComfyRuntime(opts.comfy, cpu=opts.cpu, work_dir=opts.work)
    runtime.start()
    import comfy.model_management as mm
    import folder_paths
    import numpy as np
    import torch

    runtime.load_custom_node(gpu_bench.ATTENTION_NODE)
    runtime.load_custom_node(gpu_bench.GRAPH_NODES)
    if opts.packs:
        opts.custom_nodes += [opts.packs / name for name in plan.PACK_FOLDERS]
    for folder in opts.custom_nodes:
        runtime.load_custom_node(folder)
    prompts = spec["prompts"]
    first = prompts[0]["graph"]
    runtime.server.stand_ins = gpu_bench.register_stand_ins(first, opts.tiny, results)
    graphs = [
        gpu_bench.override_inputs(p["graph"], opts, results, runtime.server.stand_ins, note=i == 0)
        for i, p in enumerate(prompts)
    ]
    device = mm.get_torch_device() if runtime.cuda else torch.device("cpu")
    gpu_bench.make_models(opts, first, device, results, runtime.server.stand_ins)
    recorded: dict[str, Any] = {}
    record_outputs(runtime, own.record, recorded)
    runtime.server.on_node = lambda run: gpu_bench.log(
        f"node {run.key} {run.class_type}: {run.seconds:.2f} s"
    )

    input_dir = Path(folder_paths.get_input_directory())
    output_dir = Path(folder_paths.get_output_directory())
    report: list[dict[str, Any]] = []
    saved_by_label: dict[str, Any] = {}
    previous = None
    for index, (prompt, graph) in enumerate(zip(prompts, graphs, strict=True), start=1):
        label = prompt["label"]
        for name, source in prompt.get("inputs", {}).items():
            (input_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, input_dir / name)
        if prompt.get("motion"):
            source = saved_by_label[prompt["motion_from"]] if prompt.get("motion_from") else previous
            chunked.hand_over(source, prompt["motion"], input_dir)
        recorded.clear()
        runtime.server.chunk = index
        gpu_bench.log(f"prompt {label}: {len(graph)} nodes")
        runs, wall = runtime.run(graph)
        cached = list(runtime.server.cached)
        ui = runtime.ui_outputs()
        saved = chunked.saved_chunk(ui, spec["output_node"], output_dir)
        kept, digests = {}, {}
        for node_id, (value, node_digests) in recorded.items():
            digests[node_id] = node_digests
            if not isinstance(value, torch.Tensor):
                continue
            path = opts.out / label / f"{node_id}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, value.detach().to(torch.float32).cpu().numpy())
            kept[node_id] = str(path)
        report.append(
            {
                "label": label,
                "wall_s": round(wall, 3),
                "ui": ui,
                "frames_file": str(saved.frames_file) if saved and saved.frames_file else None,
                "motion_file": str(saved.motion_file) if saved and saved.motion_file else None,
                "runs": [asdict(run) for run in runs],
                "cached": cached,
                "recorded": kept,
                "digests": digests,
            }
        )
        (opts.out / "prompts.json").write_text(json.dumps(report, indent=1, default=str))
        gpu_bench.log(f"prompt {label}: {wall:.1f} s, {len(runs)} nodes run, {len(cached)} from the cache")
        previous = saved_by_label[label] = saved
    return 0


if __name__ == "__main__":
    gpu_bench.exit_without_teardown(main())
