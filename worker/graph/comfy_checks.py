"""What ComfyUI 0.33.0's ``POST /prompt`` checks, and the input names and types it lets through.

The checks the server makes: classes exist, required inputs given, links point at an existing output
of a matching type, combo values allowed, INT/FLOAT within min/max, no cycles. Those it does not
(``../shared/comfyui/STACK.md`` section 5): unknown input names (a misspelled ``character_mask``
silently turns replacement into move mode), values of the wrong JSON type (``"1280"``, ``720.9`` and
``"false"`` are coerced, not refused), DynamicCombo values (``SaveVideo`` ``format`` /
``format.codec``), INT values off their step grid (width/height multiples of 16, window lengths
4n+1), exactly one output node and no node the output does not use (the server silently skips
those). Model file names are checked against what the manifest installs, never against the
catalogue's listing of the machine it was captured on.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.graph.api import GraphChecks, find_cycle, is_link, upstream
from worker.graph.catalogue import FOLDER_MODEL_INPUTS, INPUT_FILE_COMBOS
from worker.models import LOADER_FOLDERS

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

BUILT_IN_MODEL_VALUES = {"pixel_space"}


@dataclass(frozen=True)
class _Input:
    type: Any  # a type name, or the option list of a V1 combo
    options: dict[str, Any]
    required: bool


class ComfyChecks(GraphChecks):
    """``structure_ok`` first: the others assume every node has a class_type and an inputs object."""

    def __init__(self, graph: Mapping[str, Any], catalogue: Mapping[str, Any], problems: list[str]) -> None:
        super().__init__(graph, problems)
        self.catalogue = catalogue

    def structure_ok(self) -> bool:
        if not isinstance(self.graph, Mapping) or not self.graph:
            self.add(None, "the graph is not an object of nodes")
            return False
        before = len(self.problems)
        for node_id, node in self.graph.items():
            if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
                self.add(None, f"node {node_id}: no class_type")
            elif not isinstance(node.get("inputs"), Mapping):
                self.add(None, f"node {node_id}: no inputs object")
        return len(self.problems) == before

    def check_nodes(self) -> None:
        for node_id, node in self.graph.items():
            entry = self.catalogue.get(node["class_type"])
            if entry is None:
                self.add(node_id, "class is not in the pinned stack's catalogue (missing_node_type)")
                continue
            schema = _schema(entry.get("input", {}), node["inputs"])
            for name, spec in schema.items():
                if name not in node["inputs"]:
                    if spec.required:
                        self.add(node_id, f"required input {name!r} is missing")
                    continue
                self.check_value(node_id, name, spec, node["inputs"][name])
            for name in node["inputs"]:
                if name not in schema:
                    close = difflib.get_close_matches(name, list(schema), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.add(node_id, f"unknown input {name!r}{hint}: ComfyUI would silently ignore it")

    def check_value(self, node_id: str, name: str, spec: _Input, value: Any) -> None:
        class_type = self.graph[node_id]["class_type"]
        input_type = "COMBO" if isinstance(spec.type, list) else spec.type
        if isinstance(value, list):
            self.check_link(node_id, name, input_type, value)
            return
        if input_type not in WIDGET_TYPES:
            self.add(node_id, f"{name} must be linked to a {input_type} output, not the value {value!r}")
        elif input_type == "INT":
            if not isinstance(value, int) or isinstance(value, bool):
                self.add(node_id, f"{name}={value!r} is not an integer (ComfyUI would coerce or refuse it)")
            else:
                self.check_range(node_id, name, value, spec.options)
                self.check_step(node_id, name, value, spec.options)
        elif input_type == "FLOAT":
            if not isinstance(value, int | float) or isinstance(value, bool):
                self.add(node_id, f"{name}={value!r} is not a number")
            else:
                self.check_range(node_id, name, value, spec.options)
        elif input_type == "BOOLEAN" and not isinstance(value, bool):
            self.add(
                node_id, f"{name}={value!r} is not a JSON boolean (bool({value!r}) is what ComfyUI uses)"
            )
        elif input_type == "STRING" and not isinstance(value, str):
            self.add(node_id, f"{name}={value!r} is not a string")
        elif input_type == "COMBO":
            options = spec.type if isinstance(spec.type, list) else spec.options.get("options", [])
            if (class_type, name) in INPUT_FILE_COMBOS:
                if not isinstance(value, str) or not value:
                    self.add(node_id, f"{name} must name a file in ComfyUI's input folder")
            elif (class_type, name) in FOLDER_MODEL_INPUTS:
                # The catalogue's list is a folder listing of the capture machine, not the truth:
                # model names are checked against the manifest (check_models).
                if not isinstance(value, str) or not value:
                    self.add(node_id, f"{name} must name a model file")
            elif value not in options:
                shown = options if len(options) <= 20 else f"{len(options)} options"
                self.add(node_id, f"{name}={value!r} is not one of {shown} (value_not_in_list)")

    def check_link(self, node_id: str, name: str, input_type: str, value: list[Any]) -> None:
        if not is_link(value):
            self.add(node_id, f"{name}={value!r} is not a link [node_id, output_slot]")
            return
        source_id, slot = value
        source = self.graph.get(source_id)
        if source is None:
            self.add(node_id, f"{name} links node {source_id}, which is not in the graph")
            return
        entry = self.catalogue.get(source["class_type"])
        if entry is None:
            return  # reported as an unknown class
        outputs = entry.get("output", [])
        if not 0 <= slot < len(outputs):
            self.add(node_id, f"{name} links output #{slot} of node {source_id}, which has {len(outputs)}")
            return
        if not _types_match(outputs[slot], input_type):
            self.add(
                node_id, f"{name} expects {input_type} but node {source_id} output #{slot} is {outputs[slot]}"
            )

    def check_range(self, node_id: str, name: str, value: float, options: Mapping[str, Any]) -> None:
        if "min" in options and value < options["min"]:
            self.add(node_id, f"{name}={value} is below the minimum {options['min']}")
        if "max" in options and value > options["max"]:
            self.add(node_id, f"{name}={value} is above the maximum {options['max']}")

    def check_step(self, node_id: str, name: str, value: int, options: Mapping[str, Any]) -> None:
        step = options.get("step", 1)
        if isinstance(step, int) and step > 1:
            base = options.get("min", 0)
            if (value - base) % step:
                rule = f"a multiple of {step}" if base % step == 0 else f"{step}n+{base % step}"
                self.add(
                    node_id,
                    f"{name}={value} must be {rule} (step {step} from {base}); the server does not check",
                )

    def check_graph_shape(self) -> bool:
        """One output node, no cycle, no unused node; False when there is a cycle."""
        outputs = [
            n
            for n, node in self.graph.items()
            if self.catalogue.get(node["class_type"], {}).get("output_node")
        ]
        if len(outputs) != 1:
            self.add(
                None, f"the graph must have exactly one output node, has {len(outputs)}: {sorted(outputs)}"
            )
        cycle = find_cycle(self.graph)
        if cycle:
            self.add(None, f"dependency cycle: {' -> '.join(cycle)}")
        if outputs:
            used: set[str] = set()
            for output in outputs:
                used |= upstream(self.graph, output)
            for node_id in self.graph:
                if node_id not in used:
                    self.add(node_id, "no output node uses it, so ComfyUI would neither validate nor run it")
        return cycle is None

    def check_models(self, installed: Mapping[str, set[str]]) -> None:
        """Model file names against what the manifest installs (``installed``: folder -> names)."""
        for node_id, node in self.graph.items():
            for name, value in node["inputs"].items():
                folder = LOADER_FOLDERS.get((node["class_type"], name))
                if folder is None or not isinstance(value, str) or value in BUILT_IN_MODEL_VALUES:
                    continue
                filename = _sam2_file(value, node["inputs"]) if folder == "sam2" else value
                if filename not in installed.get(folder, set()):
                    self.add(
                        node_id,
                        f"{name}: models/{folder}/{filename} is not a file the model manifest installs",
                    )


def _schema(section: Mapping[str, Any], live: Mapping[str, Any], prefix: str = "") -> dict[str, _Input]:
    """Every input name a node accepts given its current values, V3 dynamic inputs expanded."""
    out: dict[str, _Input] = {}
    for category in ("required", "optional"):
        for name, spec in section.get(category, {}).items():
            key = prefix + name
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            required = category == "required"
            if kind == DYNAMIC_COMBO:
                choices = options.get("options", [])
                out[key] = _Input("COMBO", {"options": [c["key"] for c in choices]}, required)
                chosen = next((c for c in choices if c["key"] == live.get(key)), None)
                if chosen is not None:
                    out.update(_schema(chosen.get("inputs", {}), live, key + "."))
            elif kind == AUTOGROW:
                template = options["template"]
                names = template.get("names") or [f"{template['prefix']}{i}" for i in range(template["max"])]
                inner_category, inner = next((c, specs) for c, specs in template["input"].items() if specs)
                inner_spec = next(iter(inner.values()))
                inner_options = inner_spec[1] if len(inner_spec) > 1 else {}
                for index, item in enumerate(names):
                    item_required = index < template.get("min", 0) and inner_category == "required"
                    out[f"{key}.{item}"] = _Input(inner_spec[0], inner_options, item_required)
            else:
                out[key] = _Input(kind, options, required)
    return out


def _types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, '*' or MatchType, or overlapping unions."""
    if received == expected:
        return True
    if "*" in (received, expected) or MATCH_TYPE in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _sam2_file(model: str, inputs: Mapping[str, Any]) -> str:
    """The file DownloadAndLoadSAM2Model reads: a 2.1 model at fp16/bf16 loads '<name>-fp16'."""
    if inputs.get("precision") != "fp32" and "2.1" in model:
        stem, _, extension = model.rpartition(".")
        return f"{stem}-fp16.{extension}"
    return model
