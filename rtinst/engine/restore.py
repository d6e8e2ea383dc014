"""A finished run brought back: its record, config, trained model (eval mode, CPU) and val split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rtinst import paths
from rtinst.config import load_config
from rtinst.config_schema import RunConfig
from rtinst.data.build import build_dataset
from rtinst.data.coco import CocoInstanceDataset
from rtinst.engine.compact import COMPACT, last_checkpoint, load_weights, run_weights
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.records import RunRecord, read_record


@dataclass
class LoadedRun:
    run_dir: Path
    record: RunRecord
    cfg: RunConfig
    model: torch.nn.Module
    val_set: CocoInstanceDataset
    weights: Path | None = None  # the file the model's weights were read from

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def class_names(self) -> list[str]:
        return self.val_set.class_names


def recreate_command(run_dir: str | Path, record: RunRecord | None) -> str:
    """The command that re-creates a run's checkpoint and COCO results (neither is committed):
    retrain it in place, at the thread count it was recorded with. The same config, seed and
    thread count give the same batches; the weights come out the same on the same host and
    differ like another seed's on another one (results/FINDINGS.md); the re-trained run's
    record then holds its new numbers."""
    threads = record.provenance.get("torch_threads") if record is not None else None
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    rel = paths.display(run_dir)
    return f"{env}rtinst train --config {rel}/config.yaml --run-dir {rel}"


def recreate_hint(run_dir: Path, record: RunRecord) -> str:
    """:func:`recreate_command`, and how long the run took when it was recorded."""
    command = recreate_command(run_dir, record)
    m = record.metrics
    if "train_iterations" in m and "step_time_s" in m and record.wall_time_s:
        train_min = m["train_iterations"] * m["step_time_s"] / 60.0
        cost = (f"~{record.wall_time_s / 60.0:.0f} min on {record.provenance.get('hardware', 'its hardware')}: "
                f"{m['train_iterations']} steps x {m['step_time_s']:.2f} s/step = {train_min:.0f} min "
                f"of training, then evaluation")
    else:
        cost = "its duration is not in the record"
    return f"re-create with `{command}` ({cost})"


def load_run(run_dir: str | Path, data_root: str | Path | None = None,
             checkpoint: str | None = None) -> LoadedRun:
    """Model with the run's trained weights, in eval mode on CPU, and its val split.

    The weights are ``checkpoints/last.pt`` when present, else the committed compact
    ``model_fp16.pt`` (cast back to float32). ``data_root`` replaces ``data.root`` of the
    run's config (a run trained elsewhere, or a notebook executing in another folder).
    ``checkpoint``: another weights file, a name in the run's ``checkpoints/`` folder (e.g.
    ``snapshot_325it.pt``) or a path.
    """
    run_dir = Path(run_dir)
    weights = run_weights(run_dir)
    if checkpoint:
        weights = Path(checkpoint) if Path(checkpoint).is_file() else run_dir / "checkpoints" / checkpoint
        if not weights.is_file():
            raise UserError(f"--checkpoint {checkpoint}: neither a file nor in {run_dir}/checkpoints/")
    record = read_record(run_dir)
    if weights is None:
        raise UserError(f"{last_checkpoint(run_dir)}: no checkpoint (checkpoints are not committed) "
                        f"and no compact {COMPACT}; " + recreate_hint(run_dir, record))
    cfg = run_config(run_dir, data_root)
    # the checkpoint holds every weight: do not look for (or warn about) backbone files
    model_cfg = replace(cfg.model, backbone=replace(cfg.model.backbone, pretrained="none"))
    model = build_model(model_cfg)
    model.load_state_dict(load_weights(weights, cfg.model.backbone))
    model.eval()
    return LoadedRun(run_dir, record, cfg, model, build_dataset(cfg.data, "val", progress=False), weights)


def run_config(run_dir: str | Path, data_root: str | Path | None = None) -> RunConfig:
    """A run folder's config; ``data_root`` replaces its ``data.root``."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{config_file}: run config not found (is {run_dir} a run folder?)")
    cfg = load_config(config_file)
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(data_root)))
    return cfg
