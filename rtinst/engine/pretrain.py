"""`rtinst pretrain`: the tiny preset's stand-in for ImageNet pretraining.

The papers start every ablation from one ImageNet-pretrained backbone. At tiny scale rtinst
mirrors that: the tiny backbone is trained once to *classify objects* (ImageNet-style,
object-centric crops, cross-entropy) on a synthetic split generated with its own seed
(never the train/val images of the runs), and the resulting weights are committed
(``rtinst/weights/tiny_backbone.pt``, a few MB) next to a JSON card with the settings that
made them, their hash and the held-out crop accuracy. Every tiny run records the file and
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
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.synthetic import generate_synthetic
from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json
from rtinst.models.backbones import TINY_WEIGHTS, TinyBackbone
from rtinst.provenance import provenance


@dataclass
class PretrainConfig:
    data_root: str = "data/pretrain"
    num_images: int = 2000
    seed: int = 1000  # the runs' synthetic data uses seed 0: a disjoint set of images
    size: int = 320
    crop: int = 64
    context_min: float = 1.2  # crop side = object side x U(context_min, context_max)
    context_max: float = 2.5
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    minutes: float = 20.0
    max_iters: int = 100_000
    holdout_images: int = 100
    threads: int | None = None


class ObjectCrops(Dataset):
    """Every non-crowd instance as a square crop around its box, labelled with its class."""

    def __init__(self, coco_set: CocoInstanceDataset, image_ids: list[int], cfg: PretrainConfig,
                 train: bool):
        self.coco_set, self.cfg, self.train = coco_set, cfg, train
        self.items = [(img, a["bbox"], coco_set.cat_id_to_contiguous[a["category_id"]])
                      for img in image_ids for a in coco_set.coco.imgToAnns.get(img, [])
                      if not a.get("iscrowd", 0) and a["area"] > 0]
        # Decoding a JPEG per crop dominated the step time: keep the split in memory as uint8
        # (2000 images of 320 px are ~0.5 GB), shared with fork()ed loader workers.
        self.images = {img: coco_set.load_image(img).to(torch.uint8) for img in image_ids}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image_id, (x, y, w, h), label = self.items[i]
        image = self.images[image_id]
        g = None if self.train else torch.Generator().manual_seed(i)  # fixed held-out crops
        u = torch.rand(3, generator=g)
        side = max(w, h) * (self.cfg.context_min + (self.cfg.context_max - self.cfg.context_min) * u[0])
        cx = x + w / 2 + (u[1] - 0.5) * 0.3 * side
        cy = y + h / 2 + (u[2] - 0.5) * 0.3 * side
        crop = TF.resized_crop(image, int(cy - side / 2), int(cx - side / 2), max(1, int(side)),
                               max(1, int(side)), [self.cfg.crop, self.cfg.crop], antialias=True)
        if self.train and torch.rand(1).item() < 0.5:
            crop = crop.flip(-1)
        crop = TF.normalize(crop.float(), list(IMAGENET_MEAN), list(IMAGENET_STD))
        return crop, label


class CropClassifier(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = TinyBackbone()
        self.fc = nn.Linear(self.backbone.out_channels["res5"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)["res5"].mean((2, 3)))


@torch.inference_mode()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train()
    return correct / max(total, 1)


def pretrain(cfg: PretrainConfig, out: str | Path = TINY_WEIGHTS, progress: bool = True) -> dict:
    """Train the tiny backbone on object crops; write ``out`` (weights) and ``out.json`` (card)."""
    if cfg.holdout_images >= cfg.num_images:
        raise UserError(f"--holdout-images ({cfg.holdout_images}) must be < --images ({cfg.num_images})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_root)
    ann = root / "annotations" / "instances_train.json"
    if not (root / "statistics.json").is_file():
        generate_synthetic(root, cfg.num_images, 0, cfg.seed, cfg.size, progress=progress)
    coco_set = CocoInstanceDataset(ann, root / "train", training=False)
    ids = coco_set.ids
    train_set = ObjectCrops(coco_set, ids[cfg.holdout_images:], cfg, train=True)
    held_out = ObjectCrops(coco_set, ids[: cfg.holdout_images], cfg, train=False)
    torch.manual_seed(cfg.seed)
    model = CropClassifier(coco_set.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    budget, t0, it, history = cfg.minutes * 60, time.perf_counter(), 0, []
    bar = tqdm(desc="pretrain", total=cfg.max_iters, disable=not progress, dynamic_ncols=True)
    done = False
    while not done:
        for x, y in loader:
            elapsed = time.perf_counter() - t0
            # cosine decay over the wall-clock budget, so a shorter budget still anneals
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed / budget)))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if it % 200 == 0:
                history.append({"iter": it, "minutes": round(elapsed / 60, 2), "loss": loss.item()})
            if elapsed >= budget or it >= cfg.max_iters:
                done = True
                break
    bar.close()
    held_loader = DataLoader(held_out, batch_size=256, num_workers=2)
    acc = accuracy(model, held_loader)
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(model.backbone.state_dict(), tmp)
    card = {
        "what": "tiny backbone pretrained on object-centric crop classification (synthetic)",
        "config": asdict(cfg), "iterations": it, "minutes": round((time.perf_counter() - t0) / 60, 2),
        "train_crops": len(train_set), "held_out_crops": len(held_out),
        "held_out_accuracy": round(acc, 4), "num_classes": coco_set.num_classes,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "history": history,
        "provenance": provenance(),
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card
