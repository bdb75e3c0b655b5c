"""Small helpers over ComfyUI API-format graphs (``{node_id: {"class_type", "inputs"}}``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_link(value: Any) -> bool:
    """An input value that links to another node's output: ``["node_id", slot]``."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def upstream(graph: Mapping[str, Any], node_id: str) -> set[str]:
    """``node_id`` and every node it depends on, directly or not."""
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        current = stack.pop()
        if current in seen or current not in graph:
            continue
        seen.add(current)
        stack.extend(v[0] for v in graph[current]["inputs"].values() if is_link(v))
    return seen
