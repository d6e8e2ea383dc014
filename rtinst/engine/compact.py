"""Compact checkpoints: a run's trained weights in float16, small enough to commit.

``checkpoints/last.pt`` holds fp32 weights plus optimizer and RNG state (for resuming) and
stays out of git. ``<run>/model_fp16.pt`` keeps only what analysis needs: the model's state
dict with floating tensors in float16 (integer buffers, e.g. BatchNorm's step counter,
exact), the iteration reached and the sha256 of the checkpoint it was made from. A fresh
clone can then draw a run's figures (``rtinst viz``, ``notebooks/analysis/``) without
retraining it.

:func:`run_weights` is the one place that decides which weights file of a run is read:
``last.pt`` when present (exact), else ``model_fp16.pt`` (cast back to float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rtinst import paths
from rtinst.engine.checkpoint import LAST, load_checkpoint
from rtinst.errors import UserError
from rtinst.io import atomic_path, file_sha256

COMPACT = "model_fp16.pt"
FORMAT = "rtinst-compact-fp16/1"
DEFAULT_MAX_MB = 5.0


class TooLarge(UserError):
    """The compact checkpoint would exceed the size limit (nothing was written)."""


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / LAST


def compact_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / COMPACT


def to_fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors cast to float16; integer and bool tensors unchanged."""
    return {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
            for k, v in state.items()}


def to_fp32(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@dataclass
class Compacted:
    run_dir: Path
    path: Path
    size_bytes: int
    source_bytes: int
    iterations: int

    def line(self) -> str:
        return (f"{paths.display(self.path)}: {self.size_bytes / 1e6:.2f} MB "
                f"(from {self.source_bytes / 1e6:.2f} MB last.pt, iteration {self.iterations})")


def write_compact(run_dir: str | Path, max_mb: float = DEFAULT_MAX_MB) -> Compacted:
    """``<run_dir>/model_fp16.pt`` from ``<run_dir>/checkpoints/last.pt``; refuses (and leaves
    any earlier file in place) when the result would be larger than ``max_mb`` megabytes."""
    run_dir = Path(run_dir)
    source = last_checkpoint(run_dir)
    if not source.is_file():
        raise UserError(f"{paths.display(run_dir)}: no checkpoints/{LAST} to compact")
    state = load_checkpoint(source)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{paths.display(source)}: not an rtinst checkpoint (no 'model' state dict)")
    payload = {"format": FORMAT, "model": to_fp16(state["model"]),
               "iterations": int(state.get("iteration", 0)), "source_sha256": file_sha256(source)}
    out = compact_path(run_dir)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
        size = tmp.stat().st_size
        if size > max_mb * 1e6:
            # raising inside atomic_path removes the temporary file: nothing is replaced
            raise TooLarge(f"{paths.display(run_dir)}: compact checkpoint would be "
                            f"{size / 1e6:.2f} MB, over --max-mb {max_mb:g}; not written")
    return Compacted(run_dir, out, size, source.stat().st_size, payload["iterations"])


def read_compact(path: str | Path) -> dict[str, Any]:
    """A compact checkpoint's entries, its model state dict cast back to float32."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: not a compact checkpoint (format {found!r}, expected {FORMAT!r})")
    return {**state, "model": to_fp32(state["model"])}


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint or a compact checkpoint (float32 either way)."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return to_fp32(state["model"])
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not an rtinst checkpoint (no 'model' state dict)")
    return state["model"]


def run_weights(run_dir: str | Path) -> Path | None:
    """The weights file analysis reads for a run: ``checkpoints/last.pt`` (exact) when
    present, else ``model_fp16.pt``, else None."""
    for path in (last_checkpoint(run_dir), compact_path(run_dir)):
        if path.is_file():
            return path
    return None
