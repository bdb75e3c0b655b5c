"""What ``handler.handler`` returns, read back into the worker's own result form.

The handler returns a failure in RunPod's wire form (``worker.errors.for_runpod``):
``{"error": "<JSON text>", "refresh_worker"?: true}`` and nothing else, since a FAILED job's
``/status`` carries only ``error``. ``from_handler`` checks that form and gives tests the
worker's fields back: ``error`` (the message), ``error_code``, ``details``, ``refresh_worker``.
"""

from __future__ import annotations

import json
from typing import Any


def from_handler(returned: dict[str, Any]) -> dict[str, Any]:
    if "error" not in returned:
        return returned
    assert set(returned) <= {"error", "refresh_worker"}, f"more than RunPod passes on: {returned}"
    assert isinstance(returned["error"], str), returned
    failure = json.loads(returned["error"])
    assert isinstance(failure, dict) and {"error_code", "message", "details"} <= set(failure), failure
    result = {"error": failure.pop("message"), **failure}
    if returned.get("refresh_worker"):
        result["refresh_worker"] = True
    return result
