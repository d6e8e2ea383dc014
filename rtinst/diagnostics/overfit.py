"""Overfit check: can a model fit a handful of fixed training images?

The standard first test of a detector that does not learn: train on one fixed batch (the
first ``num_images`` train images, test-time resize, no flip) with the config's own
optimizer, warm-up and clipping, and score mask AP on those same images. A model that cannot
drive its losses down and reach a high AP here has a bug in its losses, matching or
post-processing; one that can, but stays low on the real data, is limited by what it learns
from the data in its budget (capacity to generalise, steps, initialization), not by code.

AP is scored twice on the memorized images: in one batch padded exactly as in training
(``ap_train_padding``) and one image at a time as the val evaluation runs
(``ap_single``). Models with absolute coordinate features (SparseInst's coord channels,
FastInst's positional embeddings) are given positions relative to the *padded* input, so a
memorizing model can score lower in the second; the gap measures how much of the fit is
position memorization.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from rtinst.config_schema import RunConfig
from rtinst.data.build import build_transforms, collate_fn, ensure_synthetic, split_paths
from rtinst.data.coco import CocoInstanceDataset
from rtinst.engine.evaluate import evaluate_segm
from rtinst.engine.inference import predict_coco
from rtinst.engine.loop import check_finite
from rtinst.engine.optim import build_optimizer, build_scheduler
from rtinst.engine.train import resolve_device
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.records import config_hash


def _gt_subset(dataset: CocoInstanceDataset, ids: list[int]) -> dict:
    keep = set(ids)
    coco = dataset.coco
    return {"images": [coco.imgs[i] for i in ids],
            "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in keep],
            "categories": coco.dataset["categories"]}


def _score(model, images, collate, dataset, gt: dict, batch_size: int,
           device: torch.device) -> dict[str, float]:
    results = predict_coco(model, images, collate, dataset.contiguous_to_cat_id, device=device,
                           batch_size=batch_size, progress=False)  # puts the model in eval mode
    if not results:
        return {"ap": 0.0, "ap50": 0.0}
    m = evaluate_segm(gt, results)
    return {"ap": m["ap"], "ap50": m["ap50"]}


def overfit(cfg: RunConfig, num_images: int = 8, steps: int = 200, eval_every: int = 100,
            progress: bool = True) -> dict[str, Any]:
    """Train ``cfg``'s model on one fixed batch of ``num_images`` train images for ``steps``
    steps; returns the loss/AP curve (every ``eval_every`` steps and at the end)."""
    if num_images < 1 or steps < 1 or eval_every < 1:
        raise UserError("overfit: --images, --steps and --eval-every must be >= 1")
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data, progress)
    ann, image_dir = split_paths(cfg.data, "train")
    dataset = CocoInstanceDataset(ann, image_dir, transforms=build_transforms(cfg.data, False),
                                  training=True)
    if len(dataset) < num_images:
        raise UserError(f"overfit: {ann} has {len(dataset)} images, fewer than --images {num_images}")
    images = Subset(dataset, range(num_images))
    gt = _gt_subset(dataset, dataset.ids[:num_images])
    collate = collate_fn(cfg.data)
    device = resolve_device(cfg.device)
    batch = collate([images[i] for i in range(num_images)]).to(device)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    model.train()
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="overfit", disable=not progress, dynamic_ncols=True):
        losses = model(batch.images, batch.targets)
        check_finite(losses, step)
        if step == 1:
            first = {k: round(v.item(), 4) for k, v in losses.items()}
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        if cfg.train.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        if step % eval_every == 0 or step == steps:
            point: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - start, 1),
                                     "losses": {k: round(v.item(), 4) for k, v in losses.items()}}
            for name, bs in (("train_padding", num_images), ("single", 1)):
                scores = _score(model, images, collate, dataset, gt, bs, device)
                point[f"ap_{name}"], point[f"ap50_{name}"] = scores["ap"], scores["ap50"]
            curve.append(point)
            model.train()
    return {"what": "overfit check: train and score on the same fixed images",
            "model": cfg.model.name, "preset": cfg.preset, "config_hash": config_hash(cfg),
            "num_images": num_images, "num_instances": len(gt["annotations"]), "steps": steps,
            "seed": cfg.seed, "device": str(device), "losses_at_step_1": first, "curve": curve}
