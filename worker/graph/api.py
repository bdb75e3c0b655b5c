"""Small helpers over ComfyUI API-format graphs (``{node_id: {"class_type", "inputs"}}``), and the
base the graph checks (``comfy_checks``, ``wan_rules``) build on."""

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


def find_cycle(graph: Mapping[str, Any]) -> list[str] | None:
    """One dependency cycle (its node ids, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node_id: str) -> list[str] | None:
        state[node_id] = 1
        path.append(node_id)
        for value in graph[node_id]["inputs"].values():
            if not is_link(value) or value[0] not in graph:
                continue
            if state.get(value[0]) == 1:
                return [*path[path.index(value[0]) :], value[0]]
            if value[0] not in state and (found := visit(value[0])):
                return found
        path.pop()
        state[node_id] = 2
        return None

    for node_id in graph:
        if node_id not in state and (found := visit(node_id)):
            return found
    return None


class GraphChecks:
    """One graph and the problems found in it, each naming its node as ``node ID (Class)``.
    Several checks share one problem list, so the list keeps the order they run in."""

    def __init__(self, graph: Mapping[str, Any], problems: list[str]) -> None:
        self.graph = graph
        self.problems = problems

    def where(self, node_id: str) -> str:
        node = self.graph.get(node_id, {})
        return f"node {node_id} ({node.get('class_type', '?')})"

    def add(self, node_id: str | None, message: str) -> None:
        self.problems.append(f"{self.where(node_id)}: {message}" if node_id is not None else message)

    def link(self, node_id: str, name: str) -> tuple[str, int] | None:
        value = self.graph[node_id]["inputs"].get(name)
        return (value[0], value[1]) if is_link(value) else None

    def source(self, node_id: str, name: str) -> tuple[str, int] | None:
        """(class, slot) feeding ``name``, when it is a link to a known node."""
        link = self.link(node_id, name)
        if link is None or link[0] not in self.graph:
            return None
        return self.graph[link[0]]["class_type"], link[1]

    def nodes_of(self, *class_types: str) -> list[str]:
        return [n for n, node in self.graph.items() if node["class_type"] in class_types]

    def consumers(self, node_id: str) -> list[tuple[str, str]]:
        return [
            (other, name)
            for other, node in self.graph.items()
            for name, value in node["inputs"].items()
            if is_link(value) and value[0] == node_id
        ]
