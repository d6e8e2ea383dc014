"""Inference to a COCO results list (RLE at the original image size).

Every model, in eval mode, returns one dict per image::

    {"scores": (N,), "labels": (N,) contiguous ids,
     "mask_probs": (N, h, w) probabilities covering the *padded* input (any stride),
     "mask_threshold": float (optional, default 0.5),
     ... model-specific extras (boxes, coefficients, IAMs) ...}

The engine turns them into masks the way detectron2 does: upsample the probabilities to the
padded input, crop the valid (unpadded) region, resize bilinearly to the original image size,
then binarize. Models therefore never need to know about padding or original sizes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from rtinst.engine.evaluate import masks_to_coco_results


def postprocess_masks(
    mask_probs: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    orig_size: tuple[int, int],
    threshold: float = 0.5,
    chunk: int = 25,
) -> torch.Tensor:
    """(N, h, w) probabilities on the padded input grid -> (N, H0, W0) bool at original size."""
    n = mask_probs.shape[0]
    out = torch.zeros((n, *orig_size), dtype=torch.bool, device=mask_probs.device)
    h, w = image_size
    for s in range(0, n, chunk):  # chunks bound the memory of full-resolution float masks
        m = mask_probs[s:s + chunk, None].float()
        m = F.interpolate(m, size=padded_size, mode="bilinear", align_corners=False)
        m = m[:, :, :h, :w]
        m = F.interpolate(m, size=orig_size, mode="bilinear", align_corners=False)
        out[s:s + chunk] = m[:, 0] > threshold
    return out


@torch.inference_mode()
def predict_coco(
    model: nn.Module,
    dataset: Dataset,
    collate: Callable,
    contiguous_to_cat_id: Sequence[int] | dict[int, int],
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    max_images: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    with_targets: bool = False,
) -> list[dict[str, Any]]:
    """Run ``model`` over ``dataset`` and return COCO segm results with real category ids.
    ``with_targets``: pass each batch's ground truth to the model (diagnostics that condition
    on it, e.g. :mod:`rtinst.diagnostics.oracle_iam`); models ignore it in eval mode."""
    results: list[dict[str, Any]] = []
    for image_id, masks, scores, labels in iter_predictions(
            model, dataset, collate, device, batch_size, max_images, num_workers, progress,
            with_targets):
        cats = [contiguous_to_cat_id[int(c)] for c in labels.tolist()]
        results += masks_to_coco_results(image_id, masks, scores, cats)
    return results


def iter_predictions(
    model: nn.Module,
    dataset: Dataset,
    collate: Callable,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    max_images: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    with_targets: bool = False,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(image id, masks (N, H0, W0) bool at original size, scores, contiguous labels) per
    image, on the CPU, with a progress bar."""
    device = torch.device(device)
    model.to(device).eval()
    if max_images is not None:
        dataset = Subset(dataset, range(min(max_images, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=num_workers)
    with torch.inference_mode():
        for batch in tqdm(loader, desc="inference", disable=not progress, dynamic_ncols=True):
            outputs = model(batch.images.to(device), batch.targets if with_targets else None)
            padded = tuple(batch.images.shape[-2:])
            for out, image_id, size, orig in zip(outputs, batch.image_ids, batch.image_sizes,
                                                 batch.orig_sizes):
                masks = postprocess_masks(out["mask_probs"], padded, tuple(size), tuple(orig),
                                          out.get("mask_threshold", 0.5))
                yield int(image_id), masks.cpu(), out["scores"].cpu(), out["labels"].cpu()
