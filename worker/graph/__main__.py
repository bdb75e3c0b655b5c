"""The graphs on the command line, with the workflow setting overrides (``WAN_*``) of the environment:

    python -m worker.graph print --frames N [--workflow PATH]   # the exact graph the worker submits
    python -m worker.graph check --frames N [--workflow PATH]   # its problems; exit 1 if any
    python -m worker.graph extract-catalogue --source PATH      # rewrite workflows/object_info_pinned.json

``--source`` of ``extract-catalogue`` is a full ``/object_info`` dump of the pinned stack (the
reference material's ``comfyui/object_info_stack.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from worker.config import DEFAULT_WORKFLOW, workflow_overrides
from worker.errors import WorkerError
from worker.graph.catalogue import CATALOGUE_PATH, load_catalogue, write_catalogue
from worker.graph.checks import check_graph
from worker.graph.workflow import Workflow
from worker.models import MANIFEST_PATH, load_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.graph",
        description="The graph the worker submits for N frames (WAN_* settings from the environment), "
        "its checks, and the node catalogue.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("print", help="print the API graph the worker submits for N frames")
    check = commands.add_parser("check", help="check the API graph the worker submits for N frames")
    for command in (show, check):
        command.add_argument("--frames", type=int, required=True, help="driving video frames at 24 fps")
        command.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW)
        command.add_argument(
            "--variant",
            default=os.environ.get("MODEL_VARIANT") or None,
            help="model variant (fp8, bf16): the diffusion model the graph loads and the files it is "
            "checked against (default: MODEL_VARIANT, else the manifest's default)",
        )
    show.add_argument("--seed", type=int, default=None)
    check.add_argument("--catalogue", type=Path, default=CATALOGUE_PATH)
    check.add_argument("--manifest", type=Path, default=None, help=f"default: {MANIFEST_PATH} when present")
    extract = commands.add_parser("extract-catalogue", help="cut the committed catalogue from a full dump")
    extract.add_argument("--source", type=Path, required=True, help="the pinned stack's full /object_info")
    extract.add_argument("--out", type=Path, default=CATALOGUE_PATH)
    args = parser.parse_args(argv)
    if args.command == "extract-catalogue":
        return _extract(args.source, args.out)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.command == "print":
        return _print(args.workflow, args.frames, args.seed, args.variant)
    return _check(args.workflow, args.frames, args.catalogue, args.manifest, args.variant)


def _print(path: Path, frames: int, seed: int | None, variant: str | None) -> int:
    try:
        workflow = Workflow.load(path, workflow_overrides(os.environ), model_variant=variant)
        graph = workflow.build(workflow.example_params(frames, seed=seed))
    except WorkerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    json.dump(graph, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _check(path: Path, frames: int, catalogue: Path, manifest: Path | None, variant: str | None) -> int:
    try:
        workflow = Workflow.load(path, workflow_overrides(os.environ), model_variant=variant)
        params = workflow.example_params(frames, filename_prefix="wan-worker/check")
        graph = workflow.build(params)
    except WorkerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    manifest = manifest or (MANIFEST_PATH if MANIFEST_PATH.is_file() else None)
    installed = load_manifest(manifest).installed(variant) if manifest else None
    problems = check_graph(
        graph,
        load_catalogue(catalogue),
        installed_models=installed,
        frames=params.frames,
        fps=params.fps,
        width=params.width,
        height=params.height,
    )
    for problem in problems:
        print(problem)
    models = (
        f"models checked against {manifest}" if manifest else "no model manifest, model names not checked"
    )
    status = f"{len(problems)} problem(s)" if problems else "OK"
    print(f"{status}: {path.name} for {frames} frames, {len(graph)} nodes; {models}", file=sys.stderr)
    return 1 if problems else 0


def _extract(source: Path, out: Path) -> int:
    try:
        subset = write_catalogue(source, out)
    except (OSError, ValueError) as exc:
        print(f"error: cannot extract the catalogue: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # a class the workflows use is not in the dump
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(subset['nodes'])} classes from {source.name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
