"""A trained run, ready for pictures: model + val split + per-image predictions with extras."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rtinst.config import RunConfig, load_config
from rtinst.data.build import build_dataset, collate_fn
from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rtinst.engine.checkpoint import LAST, load_checkpoint
from rtinst.errors import UserError
from rtinst.experiments import RunRecord, read_record
from rtinst.models import build_model


@dataclass
class LoadedRun:
    run_dir: Path
    record: RunRecord
    cfg: RunConfig
    model: torch.nn.Module
    val_set: CocoInstanceDataset

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def class_names(self) -> list[str]:
        return self.val_set.class_names


@dataclass
class Sample:
    """One val image as the network saw it, and the model's prediction for it.

    ``image`` (h, w, 3) floats in [0, 1], the resized input without padding. ``result`` is the
    model's eval output with extras; its maps live on the padded input grid ``padded``.
    ``gt_masks`` (M, h, w) bool and ``gt_labels`` (M,) at the same resolution as ``image``.
    """

    image_id: int
    image: torch.Tensor
    padded: tuple[int, int]
    result: dict[str, Any]
    gt_masks: torch.Tensor
    gt_labels: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])


def load_run(run_dir: str | Path, data_root: str | Path | None = None) -> LoadedRun:
    """Model with the run's last checkpoint, in eval mode on CPU, and its val split.

    ``data_root`` replaces ``data.root`` of the run's config (a run trained elsewhere, or a
    notebook executing in another folder).
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{config_file}: run config not found (is {run_dir} a run folder?)")
    cfg = load_config(config_file)
    if data_root is not None:
        cfg = replace(cfg, data=replace(cfg.data, root=str(data_root)))
    # the checkpoint holds every weight: do not look for (or warn about) backbone files
    model_cfg = replace(cfg.model, backbone=replace(cfg.model.backbone, pretrained="none"))
    model = build_model(model_cfg)
    state = load_checkpoint(run_dir / "checkpoints" / LAST)
    model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(run_dir, record, cfg, model, build_dataset(cfg.data, "val", progress=False))


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """(3, h, w) normalized network input -> (h, w, 3) in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) / 255).clamp(0, 1).permute(1, 2, 0)


@torch.inference_mode()
def predict(run: LoadedRun, indices: list[int] | range) -> list[Sample]:
    """Predict val images ``indices`` (positions in the val split) with extras."""
    n = len(run.val_set)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"{run.val_set.ann_file}: image indices {bad} out of range (split has {n})")
    collate = collate_fn(run.cfg.data)
    samples = []
    for i in indices:
        batch = collate([run.val_set[i]])
        out = run.model(batch.images, None, extras=True)[0]
        h, w = batch.image_sizes[0]
        target = batch.targets[0]
        samples.append(Sample(
            image_id=batch.image_ids[0], image=denormalize(batch.images[0, :, :h, :w]),
            padded=tuple(batch.images.shape[-2:]), result=out,
            gt_masks=target["masks"][:, :h, :w].bool(), gt_labels=target["labels"]))
    return samples
