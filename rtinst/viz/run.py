"""A trained run, ready for pictures: model + val split + per-image predictions with extras."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rtinst.config_schema import RunConfig
from rtinst.data.build import collate_fn
from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rtinst.engine.restore import LoadedRun, load_run
from rtinst.errors import UserError

__all__ = ["LoadedRun", "Sample", "denormalize", "load_run", "predict"]


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


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """(3, h, w) normalized network input -> (h, w, 3) in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) / 255).clamp(0, 1).permute(1, 2, 0)


def check_indices(val_set, indices) -> None:
    n = len(val_set)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"{val_set.ann_file}: image indices {bad} out of range (split has {n})")


def val_inputs(cfg: RunConfig, val_set, indices):
    """Each val image ``indices`` as a batch of one, exactly as evaluation feeds it."""
    check_indices(val_set, indices)
    collate = collate_fn(cfg.data)
    for i in indices:
        yield collate([val_set[i]])


def as_sample(batch, result: dict[str, Any]) -> Sample:
    """The :class:`Sample` of a batch of one and the model's result for it."""
    h, w = batch.image_sizes[0]
    target = batch.targets[0]
    return Sample(image_id=batch.image_ids[0], image=denormalize(batch.images[0, :, :h, :w]),
                  padded=tuple(batch.images.shape[-2:]), result=result,
                  gt_masks=target["masks"][:, :h, :w].bool(), gt_labels=target["labels"])


@torch.inference_mode()
def predict(run: LoadedRun, indices: list[int] | range) -> list[Sample]:
    """Predict val images ``indices`` (positions in the val split) with extras."""
    return [as_sample(batch, run.model(batch.images, None, extras=True)[0])
            for batch in val_inputs(run.cfg, run.val_set, list(indices))]
