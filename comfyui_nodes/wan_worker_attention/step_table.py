"""The measured seconds per sampler step per GPU model and backend (step_times.json) that auto ranks by.

No torch or ComfyUI here: the table is read and checked with the standard library. A backend
whose time is null was not measured on that GPU model and is never ranked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("step_times.json")
BACKENDS = ("cudnn", "flash", "sage", "fa4", "fa3")


class TableError(ValueError):
    """step_times.json is missing or not what this module expects."""


@dataclass(frozen=True)
class GpuSteps:
    device: str  # torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3"
    step_s: dict[str, float | None]  # every backend of BACKENDS; None: not measured
    measured: str | None  # the date of the measurement

    def ranking(self) -> list[tuple[str, float]]:
        """The measured backends, fastest first."""
        timed = [(backend, s) for backend, s in self.step_s.items() if s is not None]
        return sorted(timed, key=lambda item: item[1])


def load(path: Path = TABLE_FILE) -> tuple[GpuSteps, ...]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TableError(f"{path.name} cannot be read ({type(exc).__name__}: {exc})") from exc
    rows = data.get("gpus") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise TableError(f"{path.name} has no 'gpus' list")
    table = tuple(_row(row, path.name) for row in rows)
    names = [_key(row.device) for row in table]
    if len(set(names)) != len(names):
        raise TableError(f"{path.name} lists a GPU model twice")
    return table


def find(table: tuple[GpuSteps, ...], device_name: str | None) -> GpuSteps | None:
    """The row of this GPU model (the name as PyTorch reports it; case and spacing ignored)."""
    if not device_name:
        return None
    wanted = _key(device_name)
    return next((row for row in table if _key(row.device) == wanted), None)


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _row(row: Any, file: str) -> GpuSteps:
    if not isinstance(row, dict) or not isinstance(row.get("device"), str) or not row["device"].strip():
        raise TableError(f"{file}: a row without a device name: {row!r}")
    steps = row.get("step_s")
    if not isinstance(steps, dict) or set(steps) != set(BACKENDS):
        raise TableError(f"{file}: {row['device']}: step_s must name exactly {', '.join(BACKENDS)}")
    for backend, seconds in steps.items():
        is_number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        if seconds is not None and not (is_number and seconds > 0):
            raise TableError(
                f"{file}: {row['device']}: {backend} = {seconds!r} is not a positive number or null"
            )
    measured = row.get("measured")
    if any(seconds is not None for seconds in steps.values()) and not measured:
        raise TableError(f"{file}: {row['device']}: measured times need the date they were measured")
    return GpuSteps(row["device"], {b: steps[b] for b in BACKENDS}, measured)
