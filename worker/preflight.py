"""Everything the worker builds at start that needs no network: run first by the entrypoint, so a
misconfigured endpoint stops in a second, before a 30 GB download and ComfyUI's boot.

    python -m worker.preflight     # exit 0: "preflight: ..." on stdout; exit 2: the problem on stderr

It reads every setting (``Settings.from_env``), loads the workflow with its ``WAN_*`` settings and the
model file of ``MODEL_VARIANT``, and checks every kind of graph the worker will build
(``load_checked_workflow``: the same function the worker's start runs). MinIO, ComfyUI and the GPU are
checked when the worker starts (``handler.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from worker.config import Settings
from worker.errors import WorkerError
from worker.graph.checks import CheckedWorkflow, load_checked_workflow


def preflight(env: Mapping[str, str] | None = None) -> tuple[Settings, CheckedWorkflow]:
    """The settings and the checked workflow; WorkerError (CONFIG_INVALID, WORKFLOW_INVALID) if not."""
    settings = Settings.from_env(env)
    checked = load_checked_workflow(
        settings.workflow,
        settings.workflow_overrides,
        model_variant=settings.model_variant,
        chunk_windows=settings.chunk_windows,
    )
    return settings, checked


def main() -> int:
    try:
        settings, checked = preflight()
    except WorkerError as exc:
        print(f"{exc.code.value}: {exc.message}", file=sys.stderr)
        return 2
    workflow = checked.workflow
    print(
        f"preflight: settings valid; workflow {workflow.name} ({workflow.sha256[:12]}) and its graphs "
        f"pass their checks; model variant {settings.model_variant}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
