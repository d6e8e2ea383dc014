"""Compact checkpoints: a run's trained weights in float16, small enough to commit.

``checkpoints/last.pt`` holds fp32 weights plus optimizer and RNG state (for resuming) and
stays out of git. ``<run>/model_fp16.pt`` keeps only what analysis needs: the model's state
dict with floating tensors in float16 (integer buffers, e.g. BatchNorm's step counter,
exact), the iteration reached and the sha256 of the checkpoint it was made from. A fresh
clone can then draw a run's figures (``rtinst viz``, ``notebooks/analysis/``) without
retraining it. A figure that needs only a few numbers of a run's predictions draws from its
``predictions_snapshot.json`` instead (:mod:`rtinst.viz.snapshot` writes and reads it; its
name is here, beside the compact file's, for the code that decides what a run commits).

:func:`run_weights` is the one place that decides which weights file of a run is read:
``last.pt`` when present (exact), else ``model_fp16.pt`` (cast back to float32).

Backbone tensors that training left bit for bit at their initialization (a frozen trunk,
``model.backbone.freeze_at``) are not stored: ``from_init`` names the committed weights file
they come from (with its sha256) and their keys, and reading fills them from that file
(exactly, in float32). The tiny models' trunk is most of their weights, so a run with a frozen
tiny backbone compacts to its heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rtinst import paths
from rtinst.config import load_config
from rtinst.config_schema import BackboneConfig
from rtinst.engine.checkpoint import LAST, load_checkpoint
from rtinst.errors import UserError
from rtinst.io import atomic_write, file_sha256

COMPACT = "model_fp16.pt"
FORMAT = "rtinst-compact-fp16/1"
SNAPSHOT = "predictions_snapshot.json"
DEFAULT_MAX_MB = 6.0  # the SparseInst tiny model is 5.6 MB in float16 (2.8 M weights)


class TooLarge(UserError):
    """The compact checkpoint would exceed the size limit (nothing was written)."""


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / LAST


def compact_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / COMPACT


def snapshot_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SNAPSHOT


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


BACKBONE = "backbone."


def _init_backbone(cfg: BackboneConfig) -> tuple[Path, dict[str, torch.Tensor]] | None:
    """The weights file a backbone of ``cfg`` starts from and the state it loads (None when
    it starts from scratch or the file is not here)."""
    from rtinst.models.backbones import build_backbone, resolve_pretrained

    path = resolve_pretrained(cfg)
    if path is None or not path.is_file():
        return None
    return path, {BACKBONE + k: v for k, v in build_backbone(cfg).state_dict().items()}


def _from_init(model: dict[str, torch.Tensor], cfg: BackboneConfig | None) -> dict[str, Any] | None:
    init = _init_backbone(cfg) if cfg is not None else None
    if init is None:
        return None
    path, state = init
    keys = sorted(k for k, v in state.items() if k in model and model[k].dtype == v.dtype
                  and torch.equal(model[k], v))
    return {"file": paths.display(path), "sha256": file_sha256(path), "keys": keys} if keys else None


def _run_backbone_config(run_dir: Path) -> BackboneConfig | None:
    config = run_dir / "config.yaml"
    return load_config(config).model.backbone if config.is_file() else None


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
    model = state["model"]
    from_init = _from_init(model, _run_backbone_config(run_dir))
    if from_init is not None:
        model = {k: v for k, v in model.items() if k not in set(from_init["keys"])}
    payload = {"format": FORMAT, "model": to_fp16(model),
               "iterations": int(state.get("iteration", 0)), "source_sha256": file_sha256(source),
               **({"from_init": from_init} if from_init is not None else {})}
    out = compact_path(run_dir)
    def write(f) -> None:
        torch.save(payload, f)
        if f.tell() > max_mb * 1e6:
            # raising inside atomic_write removes the temporary file: nothing is replaced
            raise TooLarge(f"{paths.display(run_dir)}: compact checkpoint would be "
                            f"{f.tell() / 1e6:.2f} MB, over --max-mb {max_mb:g}; not written")

    atomic_write(out, write, mode="wb")  # a file object: the same weights give the same bytes
    return Compacted(run_dir, out, out.stat().st_size, source.stat().st_size, payload["iterations"])


def _model_fp32(path: Path, state: dict[str, Any], cfg: BackboneConfig | None) -> dict[str, torch.Tensor]:
    """A compact checkpoint's model state in float32, with its ``from_init`` tensors filled in
    from the file it names (``cfg``: the run's backbone config, default: from the run folder)."""
    model = to_fp32(state["model"])
    ref = state.get("from_init")
    if not ref:
        return model
    file = paths.resolve(ref["file"])
    if file_sha256(file) != ref["sha256"]:
        found = "is not here" if not file.is_file() else "has other contents"
        raise UserError(f"{path}: {len(ref['keys'])} backbone tensors come from {ref['file']} "
                        f"(sha256 {ref['sha256'][:12]}), which {found}")
    cfg = cfg if cfg is not None else _run_backbone_config(path.parent)
    init = _init_backbone(cfg) if cfg is not None else None
    if init is None:
        raise UserError(f"{path}: needs its run's config.yaml to rebuild the backbone from {ref['file']}")
    missing = [k for k in ref["keys"] if k not in init[1]]
    if missing:
        raise UserError(f"{path}: {ref['file']} has no {missing[0]} ({len(missing)} keys missing)")
    return {**model, **{k: init[1][k] for k in ref["keys"]}}


def read_compact(path: str | Path, cfg: BackboneConfig | None = None) -> dict[str, Any]:
    """A compact checkpoint's entries, its model state dict cast back to float32 and complete."""
    path = Path(path)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: not a compact checkpoint (format {found!r}, expected {FORMAT!r})")
    return {**state, "model": _model_fp32(path, state, cfg)}


def load_weights(path: str | Path, cfg: BackboneConfig | None = None) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint or a compact checkpoint (float32 either way;
    ``cfg``: the run's backbone config, for a compact file outside its run folder)."""
    path = Path(path)
    state = load_checkpoint(path)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return _model_fp32(path, state, cfg)
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
