"""`rtinst pretrain`: the tiny preset's stand-in for ImageNet pretraining.

The papers start every ablation from one ImageNet-pretrained backbone. At tiny scale rtinst
mirrors that: the tiny backbone is trained once, on a synthetic split generated with its own
seed (never the train/val images of the runs), and the resulting weights are committed
(``rtinst/weights/tiny_backbone.pt``, a few MB) next to a JSON card with the settings that
made them, their hash and the held-out accuracy.

The task is *dense* classification (the class of every pixel at stride 8, cross-entropy)
rather than ImageNet's one label per image: object-centric crop classification was tried
first and stayed at chance loss (2.30 for 10 classes) after 185 steps / 9 minutes on this
CPU, while every pixel of a dense target is a training signal. Every tiny run records the file and
its hash; ``model.backbone.pretrained=none`` trains from scratch instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.synthetic import GENERATION_FILE, generate_synthetic
from rtinst.data.transforms import Compose, Normalize, RandomHorizontalFlip, ResizeShortEdge, collate
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json
from rtinst.models.backbones import TINY_WEIGHTS, TinyBackbone
from rtinst.models.necks import FPN
from rtinst.provenance import provenance

IGNORE = -1


@dataclass
class PretrainConfig:
    data_root: str = "data/pretrain"
    num_images: int = 2000
    seed: int = 1000  # the runs' synthetic data uses seed 0: a disjoint set of images
    size: int = 320
    short_edge: tuple[int, int] = (192, 288)  # scale jitter of the short edge; long edge <= size
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    minutes: float = 20.0
    max_iters: int = 100_000
    holdout_images: int = 100
    threads: int | None = None


class SemanticHead(nn.Module):
    """Tiny backbone + a light FPN head predicting K+1 classes per pixel at stride 8."""

    def __init__(self, num_classes: int, dim: int = 64):
        super().__init__()
        self.backbone = TinyBackbone()
        ch = self.backbone.out_channels
        self.fpn = FPN([ch["res3"], ch["res4"], ch["res5"]], dim, output_levels=[0])
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(dim, num_classes + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return self.out(self.fpn([f["res3"], f["res4"], f["res5"]])[0])


def semantic_targets(batch, stride: int = 8) -> torch.Tensor:
    """Per-pixel class (0 = background, k + 1 = class k) at ``stride``; padding is ignored."""
    b, _, hp, wp = batch.images.shape
    target = torch.full((b, hp, wp), IGNORE, dtype=torch.long)
    for i, (t, (h, w)) in enumerate(zip(batch.targets, batch.image_sizes)):
        target[i, :h, :w] = 0
        for mask, label in zip(t["masks"], t["labels"]):
            target[i][mask.bool()] = label + 1
    return target[:, stride // 2::stride, stride // 2::stride]


@torch.inference_mode()
def pixel_accuracy(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Held-out pixel accuracy, overall and on object pixels only."""
    model.eval()
    hits = total = obj_hits = obj_total = 0
    for batch in loader:
        target = semantic_targets(batch)
        pred = model(batch.images).argmax(1)
        valid, obj = target != IGNORE, target > 0
        hits += (pred == target)[valid].sum().item()
        total += valid.sum().item()
        obj_hits += (pred == target)[obj].sum().item()
        obj_total += obj.sum().item()
    model.train()
    return {"pixel_accuracy": hits / max(total, 1), "object_pixel_accuracy": obj_hits / max(obj_total, 1)}


def pretrain(cfg: PretrainConfig, out: str | Path = TINY_WEIGHTS, progress: bool = True) -> dict:
    """Train the tiny backbone on dense classification; write ``out`` and ``out.json`` (card)."""
    if cfg.holdout_images >= cfg.num_images:
        raise UserError(f"--holdout-images ({cfg.holdout_images}) must be < --images ({cfg.num_images})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_root)
    if not (root / GENERATION_FILE).is_file():
        generate_synthetic(root, cfg.num_images, 0, cfg.seed, cfg.size, progress=progress)
    ann, images = root / "annotations" / "instances_train.json", root / "train"
    augment = Compose([ResizeShortEdge(cfg.short_edge, cfg.size, sample="range"),
                       RandomHorizontalFlip(0.5), Normalize()])
    full = CocoInstanceDataset(ann, images, transforms=augment, training=True)
    plain = CocoInstanceDataset(ann, images, transforms=Normalize(), training=True)
    held_out = Subset(plain, range(cfg.holdout_images))
    train_set = Subset(full, range(cfg.holdout_images, len(full)))
    torch.manual_seed(cfg.seed)
    model = SemanticHead(full.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True, collate_fn=collate)
    budget, t0, it, history = cfg.minutes * 60, time.perf_counter(), 0, []
    bar = tqdm(desc="pretrain", total=cfg.max_iters, disable=not progress, dynamic_ncols=True)
    done = False
    while not done:
        for batch in loader:
            elapsed = time.perf_counter() - t0
            # cosine decay over the wall-clock budget, so a shorter budget still anneals
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(batch.images), semantic_targets(batch), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if it % 50 == 0:
                history.append({"iter": it, "minutes": round(elapsed / 60, 2), "loss": loss.item()})
            if elapsed >= budget or it >= cfg.max_iters:
                done = True
                break
    bar.close()
    accuracy = pixel_accuracy(model, DataLoader(held_out, batch_size=8, collate_fn=collate))
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(model.backbone.state_dict(), tmp)
    card = {
        "what": "tiny backbone pretrained on dense classification (per-pixel class, stride 8) "
                "of a separate synthetic split",
        "config": asdict(cfg), "iterations": it, "minutes": round((time.perf_counter() - t0) / 60, 2),
        "train_images": len(train_set), "held_out_images": len(held_out), **accuracy,
        "num_classes": full.num_classes,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "history": history,
        "provenance": provenance(),
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card
