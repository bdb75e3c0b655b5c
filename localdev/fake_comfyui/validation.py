"""What ``POST /prompt`` checks before queueing, with the error bodies a real 0.33.0 server answers
(``/work/shared/comfyui/captures/bad_input.json``): node classes, outputs, links, types, ranges, combos,
and the input files LoadImage / LoadVideo name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from localdev.fake_comfyui.catalogue import NODE_CLASSES, is_output_node, upload_kind
from localdev.fake_comfyui.files import input_file_exists
from worker.graph.api import is_link

SCALAR_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}

# -- validation (POST /prompt) --------------------------------------------------------------


def failed_validation_body(node_errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": node_errors,
    }


def top_error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": extra},
        "node_errors": {},
    }


class PromptValidator:
    """What ``POST /prompt`` checks: node types, outputs, links, types, ranges, combos, files."""

    def __init__(self, prompt: dict[str, Any], input_dir: Path) -> None:
        self.prompt = prompt
        self.input_dir = input_dir
        self._results: dict[str, tuple[bool, list[tuple[str, list[dict[str, Any]]]]]] = {}

    def validate(self) -> tuple[int, dict[str, Any], list[str]]:
        """(HTTP status, error body or node_errors, outputs to execute)."""
        for node_id, node in self.prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                body = top_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
                return 400, body, []
            class_type = node["class_type"]
            if class_type not in NODE_CLASSES:
                title = (node.get("_meta") or {}).get("title", class_type)
                body = top_error(
                    "missing_node_type",
                    f"Node '{title}' not found. The custom node may not be installed.",
                    f"Node ID '#{node_id}'",
                    node_id=node_id,
                    class_type=class_type,
                    node_title=title,
                )
                return 400, body, []
        outputs = [nid for nid, node in self.prompt.items() if is_output_node(node["class_type"])]
        if not outputs:
            return 400, top_error("prompt_no_outputs", "Prompt has no outputs"), []
        good: list[str] = []
        node_errors: dict[str, Any] = {}
        for output_id in outputs:
            ok, failures = self._validate_node(output_id, set())
            if ok:
                good.append(output_id)
                continue
            for node_id, errors in failures:
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": errors,
                        "dependent_outputs": [],
                        "class_type": self.prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output_id)
        if not good:
            return 400, failed_validation_body(node_errors), []
        return 200, node_errors, good

    def _validate_node(
        self, node_id: str, visiting: set[str]
    ) -> tuple[bool, list[tuple[str, list[dict[str, Any]]]]]:
        if node_id in self._results:
            return self._results[node_id]
        if node_id in visiting:
            error = {
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": node_id,
                "extra_info": {"node_id": node_id},
            }
            return False, [(node_id, [error])]
        visiting = visiting | {node_id}
        node = self.prompt[node_id]
        spec = NODE_CLASSES[node["class_type"]]["input"]
        inputs = node.setdefault("inputs", {})
        errors: list[dict[str, Any]] = []
        upstream_failures: list[tuple[str, list[dict[str, Any]]]] = []
        for name in spec.get("required", {}):
            if name not in inputs:
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }
                )
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in list(inputs.items()):
            config = declared.get(name)
            if config is None:
                continue  # unknown input names are ignored, as on a real server
            config = [config[0], config[1] if len(config) > 1 else {}]
            if is_link(value):
                failures = self._check_link(node_id, name, value, config, visiting, errors)
                upstream_failures.extend(failures)
            else:
                self._check_value(node, name, value, config, errors)
        result_ok = not errors and not upstream_failures
        failures = ([(node_id, errors)] if errors else []) + upstream_failures
        result = (result_ok, failures)
        self._results[node_id] = result
        return result

    def _check_link(
        self,
        node_id: str,
        name: str,
        value: list[Any],
        config: list[Any],
        visiting: set[str],
        errors: list[dict[str, Any]],
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        source_id, slot = str(value[0]), value[1]
        input_type = config[0] if isinstance(config[0], str) else "COMBO"
        source = self.prompt.get(source_id)
        if source is None or slot >= len(NODE_CLASSES[source["class_type"]]["output"]) or slot < 0:
            exception = (
                ("KeyError", f"'{source_id}'")
                if source is None
                else ("IndexError", "list index out of range")
            )
            errors.append(
                {
                    "type": "exception_during_inner_validation",
                    "message": "Exception when validating inner node",
                    "details": exception[1],
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "exception_message": exception[1],
                        "exception_type": exception[0],
                        "traceback": [
                            '  File "localdev/fake_comfyui/validation.py", in PromptValidator (fake)\n'
                        ],
                        "linked_node": value,
                    },
                }
            )
            return []
        received = NODE_CLASSES[source["class_type"]]["output"][slot]
        if received != input_type and "*" not in (received, input_type):
            errors.append(
                {
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": f"{name}, received_type({received}) mismatch input_type({input_type})",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_type": received,
                        "linked_node": value,
                    },
                }
            )
            return []
        ok, failures = self._validate_node(source_id, visiting)
        return [] if ok else failures

    def _check_value(
        self, node: dict[str, Any], name: str, value: Any, config: list[Any], errors: list[dict[str, Any]]
    ) -> None:
        kind = config[0]
        options = config[1] if len(config) > 1 else {}
        if kind == "COMFY_DYNAMICCOMBO_V3":
            return  # DynamicCombo values are not validated by the real server either
        if isinstance(kind, str) and kind in SCALAR_TYPES:
            converted = self._convert(kind, name, value, config, errors)
            if converted is None:
                return
            node["inputs"][name] = converted
            if kind in ("INT", "FLOAT"):
                low, high = options.get("min"), options.get("max")
                if low is not None and converted < low:
                    errors.append(
                        self._range_error(
                            "value_smaller_than_min", "smaller than min", low, name, value, config
                        )
                    )
                if high is not None and converted > high:
                    errors.append(
                        self._range_error(
                            "value_bigger_than_max", "bigger than max", high, name, value, config
                        )
                    )
            return
        what = upload_kind(config)
        if what is not None:  # checked by the node itself, not against the listing
            if not input_file_exists(self.input_dir, value):
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"{name} - Invalid {what} file: {value}",
                        "extra_info": {"input_name": name},
                    }
                )
            return
        choices = kind if isinstance(kind, list) else options.get("options")
        if isinstance(choices, list) and value not in choices:
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {choices}",
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value},
                }
            )

    @staticmethod
    def _convert(kind: str, name: str, value: Any, config: list[Any], errors: list[dict[str, Any]]) -> Any:
        converters: dict[str, Callable[[Any], Any]] = {
            "INT": int,
            "FLOAT": float,
            "STRING": str,
            "BOOLEAN": bool,
        }
        try:
            return converters[kind](value)
        except (TypeError, ValueError) as exc:
            errors.append(
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {kind} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                }
            )
            return None

    @staticmethod
    def _range_error(
        kind: str, words: str, limit: Any, name: str, value: Any, config: list[Any]
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "message": f"Value {value} {words} of {limit}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": value},
        }
