"""`rtinst pretrain`: the tiny preset's stand-in for ImageNet pretraining.

The papers start every ablation from one ImageNet-pretrained backbone. At tiny scale rtinst
mirrors that: the tiny backbone is trained once, on a synthetic split generated with its own
seed (never the train/val images of the runs), and the resulting weights are committed
(``rtinst/weights/tiny_backbone.pt``, a few MB) next to a JSON card with the settings that
made them, their hash and the held-out accuracy.

The task is ImageNet's: one label per object-centred crop. Crops are cut on the fly with
``torchvision.ops.roi_align`` from the split held in memory, with a random context (the
window is 1.1-3x the object), a random shift and a flip, so a 41k-object split yields fresh
samples for tens of thousands of steps. Steps cycle through crop sizes (64, 112, 160 px, batches
sized so that each step costs ~0.3 Mpx, ~0.1 s on 2 CPU cores) so that objects are seen at the
sizes they have in the detection images. ``init`` starts a second stage from earlier weights;
the card then embeds the earlier card.

Why two stages: objects in the detection images span 12-175 px at 320 px, but a 64 px crop
at context 1.2-3 shows every object at 21-53 px. Weights pretrained only on those (stage 1,
80% held-out crop accuracy) transferred badly to the detection scale: a linear probe on
mask-pooled features of the GT objects of full val images classified 36% of them (25% of the
large ones; `rtinst bench probe`). Stage 2 adds 112 and 160 px crops (objects at 56-145 px):
50% (large 43%) after 6000 more steps (18 min).

Why a third stage: crops centre one object in a window, but the detectors classify an object
from the features at its own location in a full, cluttered image, next to other objects.
Stage 3 (``object_steps``) spends half of its steps on that task: every object of a batch of
full images (rescaled 0.8-1.25x, flipped) is classified by a linear head per level from its
mask-averaged res3/res4/res5 features. 4000 steps (18 min) took the linear probe of val GT
objects from 50% to 60% (res5 41% -> 58%), and YOLACT tiny from 7.85 to 13.4 mask AP at the
same 800 steps; held-out crop accuracy stayed at 76%.

Dense per-pixel classification at stride 8 (batch 8 of full images) was the first choice and
learned slowly: 30 min gave 25% accuracy on object pixels, and a YOLACT fine-tuned from it
classified detected objects at chance (19%) while localizing them well.
Every tiny run records the weights file and its hash; ``model.backbone.pretrained=none``
trains from scratch instead.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align
from tqdm.auto import tqdm

from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.synthetic import GENERATION_FILE, generate_synthetic
from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rtinst.errors import UserError
from rtinst.io import atomic_torch_save, atomic_write_json, file_sha256
from rtinst.models.backbones import TINY_WEIGHTS, TinyBackbone, load_weights
from rtinst.ops.mask_pool import mask_pool
from rtinst.provenance import provenance

MIN_OBJECT_SIDE = 8  # px; smaller objects carry too little shape to label a crop


@dataclass(frozen=True)
class CropScale:
    """One kind of crop: ``crop_size`` px windows of ``context`` x the object side, ``batch`` per step."""

    crop_size: int
    context: tuple[float, float]  # crop side / object side, sampled uniformly
    batch: int

    @classmethod
    def parse(cls, text: str) -> "CropScale":
        """``"64:1.2:3.0:64"`` -> crop 64 px, context 1.2-3.0, batch 64 (the CLI's format)."""
        parts = text.split(":")
        try:
            size, lo, hi, batch = int(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])
        except (ValueError, IndexError):
            raise UserError(f"--scale {text!r}: expected CROP:CONTEXT_LOW:CONTEXT_HIGH:BATCH, "
                            "e.g. 64:1.2:3.0:64") from None
        return cls(size, (lo, hi), batch)


@dataclass
class PretrainConfig:
    data_root: str = "data/pretrain"
    num_images: int = 6000
    seed: int = 1000  # the runs' synthetic data uses seed 0: a disjoint set of images
    size: int = 320
    # cycled step by step. The default is stage 1 of the committed weights; stage 2 (see the
    # Makefile's tiny-backbone) adds 112 and 160 px crops of about the same cost per step.
    scales: tuple[CropScale, ...] = (CropScale(64, (1.2, 3.0), 64),)
    lr: float = 2e-3
    weight_decay: float = 0.05
    iters: int = 15_000  # the cosine schedule spans these, so the result does not depend on speed
    warmup_iters: int = 200
    holdout_images: int = 200
    eval_period: int = 1000
    init: str | None = None  # backbone weights to start from (a previous stage), else random
    threads: int | None = None
    # Stage 3: steps of mask-pooled object classification on full images, interleaved with
    # the crop steps (``object_steps`` per cycle through ``scales``; 0: crops only).
    object_steps: int = 0
    object_batch: int = 8
    object_jitter: tuple[float, float] = (0.8, 1.25)  # random image rescale per object step


class CropClassifier(nn.Module):
    """Tiny backbone + global average pooling of C5 + a linear classifier."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = TinyBackbone()
        self.fc = nn.Linear(self.backbone.out_channels["res5"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)["res5"].mean((2, 3)))


class ObjectHeads(nn.Module):
    """One linear classifier per backbone level on mask-averaged features of each object."""

    def __init__(self, channels: dict[str, int], num_classes: int):
        super().__init__()
        self.heads = nn.ModuleDict({k: nn.Linear(c, num_classes) for k, c in channels.items()})

    def forward(self, levels: dict[str, torch.Tensor], cover: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cover``: (B, O, h, w) object masks (fraction of each cell covered; padded objects
        are all zero) -> {level: (B, O, num_classes) logits}."""
        out = {}
        for name, head in self.heads.items():
            out[name] = head(mask_pool(cover, levels[name]))
        return out


class ObjectMasks:
    """The visible mask of every object of a split's images at 1/4 resolution, per image.

    Full-image steps teach what the detectors need from their backbone: the class of an
    object from the features at its own location, in clutter, next to other objects; crops
    alone centre one object in a window (see the module docstring for the measured gap).
    """

    STRIDE = 4

    def __init__(self, dataset: CocoInstanceDataset, image_indices: range, size: int):
        cells = size // self.STRIDE
        masks, labels, self.rows = [], [], []
        first = 0
        for i in image_indices:
            target = dataset.load_target(dataset.ids[i])
            m = target["masks"][:, :size, :size].float()
            box = target["boxes"]
            keep = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) >= MIN_OBJECT_SIDE
            m = F.pad(m[keep], (0, size - m.shape[-1], 0, size - m.shape[-2]))
            self.rows.append(torch.arange(first, first + int(keep.sum())))
            first += int(keep.sum())
            masks.append((F.avg_pool2d(m[:, None], self.STRIDE)[:, 0] * 255).round().to(torch.uint8)
                         if len(m) else torch.zeros((0, cells, cells), dtype=torch.uint8))
            labels.append(target["labels"][keep])
        self.masks, self.labels = torch.cat(masks), torch.cat(labels)

    def batch(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, O, h, w) covers of the objects of images ``slots`` (O = most objects in one of
        them; padding is zero) and (B, O) labels (-100 on padding: ignored by cross_entropy)."""
        rows = [self.rows[s] for s in slots.tolist()]
        most = max(1, max(len(r) for r in rows))
        cover = torch.zeros((len(rows), most, *self.masks.shape[1:]))
        labels = torch.full((len(rows), most), -100, dtype=torch.long)
        for b, r in enumerate(rows):
            cover[b, :len(r)] = self.masks[r].float() / 255
            labels[b, :len(r)] = self.labels[r]
        return cover, labels


class CropSource:
    """All images of a split in memory (uint8) and one (image index, box, label) per object."""

    def __init__(self, dataset: CocoInstanceDataset, image_indices: range, size: int):
        n = len(image_indices)
        self.images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
        objects = []
        for slot, i in enumerate(image_indices):
            image_id = dataset.ids[i]
            image = dataset.load_image(image_id)
            h, w = min(image.shape[1], size), min(image.shape[2], size)
            self.images[slot, :, :h, :w] = image[:, :h, :w].to(torch.uint8)
            for ann in dataset._instances(image_id):
                x, y, bw, bh = ann["bbox"]
                if max(bw, bh) >= MIN_OBJECT_SIDE:
                    objects.append((slot, x + bw / 2, y + bh / 2, max(bw, bh),
                                    dataset.cat_id_to_contiguous[ann["category_id"]]))
        if not objects:
            raise UserError(f"{dataset.ann_file}: no object of at least {MIN_OBJECT_SIDE} px "
                            "to pretrain on")
        self.objects = torch.tensor(objects, dtype=torch.float32)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.objects)

    def crops(self, rows: torch.Tensor, crop_size: int, context: tuple[float, float] | float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (B, 3, crop, crop) crops of objects ``rows`` and their labels.

        ``context`` is a fixed crop/object side ratio (evaluation) or a range sampled per crop
        together with a shift of up to 15% of the object side and a horizontal flip (training).
        """
        obj = self.objects[rows]
        slots, labels = obj[:, 0].long(), obj[:, 4].long()
        cx, cy, side = obj[:, 1], obj[:, 2], obj[:, 3]
        b = len(rows)
        if isinstance(context, tuple):
            lo, hi = context
            side = side * (lo + (hi - lo) * torch.rand(b, generator=generator))
            shift = (torch.rand(2, b, generator=generator) - 0.5) * 0.3 * obj[:, 3]
            cx, cy = cx + shift[0], cy + shift[1]
        else:
            side = side * context
        unique, batch_index = torch.unique(slots, return_inverse=True)
        boxes = torch.stack([batch_index.float(), cx - side / 2, cy - side / 2,
                             cx + side / 2, cy + side / 2], dim=1)
        # 2x2 samples per output cell: the adaptive default samples large boxes densely for
        # no visible gain at 64 px and doubles the cost of a step
        x = roi_align(self.images[unique].float(), boxes, crop_size, aligned=True, sampling_ratio=2)
        if isinstance(context, tuple):
            flip = torch.rand(b, generator=generator) < 0.5
            x[flip] = x[flip].flip(-1)
        return (x - self.mean) / self.std, labels


@torch.inference_mode()
def crop_accuracy(model: nn.Module, source: CropSource, crop_size: int, context: float = 1.6) -> float:
    """Top-1 accuracy on every held-out object, cropped centred with a fixed context."""
    model.eval()
    hits = 0
    for rows in torch.arange(len(source)).split(256):
        x, labels = source.crops(rows, crop_size, context)
        hits += (model(x).argmax(1) == labels).sum().item()
    model.train()
    return hits / len(source)


def held_out_accuracy(model: nn.Module, source: CropSource, scales: tuple[CropScale, ...]) -> dict[str, float]:
    """Held-out crop accuracy at every crop size (fixed context 1.6)."""
    return {str(sc.crop_size): round(crop_accuracy(model, source, sc.crop_size), 4)
            for sc in sorted(set(scales), key=lambda sc: sc.crop_size)}


def object_step_inputs(source: CropSource, objects: ObjectMasks, slots: torch.Tensor,
                       jitter: tuple[float, float] | None = None,
                       generator: torch.Generator | None = None):
    """Normalized full images ``slots`` with their object covers and labels; with ``jitter``
    the batch is flipped (p=0.5) and rescaled by a factor in that range (multiple of 32 px)."""
    x = source.images[slots].float()
    cover, labels = objects.batch(slots)
    if jitter is not None:
        if torch.rand(1, generator=generator).item() < 0.5:
            x, cover = x.flip(-1), cover.flip(-1)
        f = jitter[0] + (jitter[1] - jitter[0]) * torch.rand(1, generator=generator).item()
        side = max(64, round(x.shape[-1] * f / 32) * 32)
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return (x - source.mean) / source.std, cover, labels


@torch.inference_mode()
def object_accuracy(backbone: nn.Module, heads: ObjectHeads, source: CropSource,
                    objects: ObjectMasks) -> dict[str, float]:
    """Held-out accuracy of each level's head on the mask-pooled objects of full images."""
    backbone.eval()
    hits: dict[str, int] = {}
    total = 0
    for slots in torch.arange(len(source.images)).split(16):
        x, cover, labels = object_step_inputs(source, objects, slots)
        for name, logits in heads(backbone(x), cover).items():
            hits[name] = hits.get(name, 0) + int((logits.argmax(-1) == labels).sum())
        total += int((labels >= 0).sum())
    backbone.train()
    return {k: round(v / max(total, 1), 4) for k, v in hits.items()}


def pretrain(cfg: PretrainConfig, out: str | Path = TINY_WEIGHTS, progress: bool = True) -> dict:
    """Train the tiny backbone on crop classification (and, with ``object_steps``, on the
    objects of full images); write ``out`` and ``out.json`` (card)."""
    if cfg.holdout_images >= cfg.num_images:
        raise UserError(f"--holdout-images ({cfg.holdout_images}) must be < --images ({cfg.num_images})")
    if not cfg.scales:
        raise UserError("pretrain: no crop scale given")
    for sc in cfg.scales:
        if not 0 < sc.context[0] <= sc.context[1] or sc.crop_size < 8 or sc.batch < 1:
            raise UserError(f"scale {sc.crop_size}:{sc.context[0]}:{sc.context[1]}:{sc.batch}: "
                            "need crop >= 8 px, 0 < context low <= high, batch >= 1")
    if cfg.object_steps < 0 or cfg.object_batch < 1 or not 0 < cfg.object_jitter[0] <= cfg.object_jitter[1]:
        raise UserError(f"pretrain: object steps {cfg.object_steps} / batch {cfg.object_batch} / "
                        f"jitter {cfg.object_jitter}: need steps >= 0, batch >= 1, 0 < low <= high")
    if cfg.init is not None and not Path(cfg.init).is_file():
        raise UserError(f"{cfg.init}: init weights file not found")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_root)
    generation = root / GENERATION_FILE
    if generation.is_file():  # an existing split must be the one the card will describe
        made = json.loads(generation.read_text())
        if "difficulty" in made:  # the backbone always pretrains on the hard level's images
            raise UserError(f"{generation}: split made at difficulty {made['difficulty']!r}, not the "
                            "hard level pretraining uses; delete the folder or pass --data-root")
        if (made.get("train"), made.get("seed"), made.get("size")) != (cfg.num_images, cfg.seed, cfg.size):
            raise UserError(f"{generation}: split has {made.get('train')} images from seed "
                            f"{made.get('seed')} at {made.get('size')} px, not {cfg.num_images} from seed "
                            f"{cfg.seed} at {cfg.size} px; "
                            "delete the folder or pass --data-root")
    else:
        generate_synthetic(root, cfg.num_images, 0, cfg.seed, cfg.size, progress=progress)
    dataset = CocoInstanceDataset(root / "annotations" / "instances_train.json", root / "train",
                                  training=True)
    n = len(dataset)
    held_out = CropSource(dataset, range(cfg.holdout_images), cfg.size)
    train = CropSource(dataset, range(cfg.holdout_images, n), cfg.size)

    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = CropClassifier(dataset.num_classes)
    heads = None
    if cfg.object_steps > 0:
        held_out_objects = ObjectMasks(dataset, range(cfg.holdout_images), cfg.size)
        train_objects = ObjectMasks(dataset, range(cfg.holdout_images, n), cfg.size)
        heads = ObjectHeads(model.backbone.out_channels, dataset.num_classes)
    cycle = [*cfg.scales, *["objects"] * cfg.object_steps]
    init = None
    if cfg.init is not None:
        missing = load_weights(model.backbone, cfg.init)["missing"]
        if missing:
            raise UserError(f"{cfg.init}: not tiny-backbone weights (missing {missing[0]}, ...)")
        init = {"path": cfg.init, "sha256": file_sha256(cfg.init)}
        card_path = Path(cfg.init).with_suffix(".json")
        if card_path.is_file():  # the previous stage's recipe travels with this one
            init["card"] = json.loads(card_path.read_text())
    params = [*model.parameters(), *(heads.parameters() if heads is not None else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0, history = time.perf_counter(), []
    bar = tqdm(range(1, cfg.iters + 1), desc="pretrain", disable=not progress, dynamic_ncols=True)
    for it in bar:
        warm = min(1.0, it / max(cfg.warmup_iters, 1))
        lr = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * it / cfg.iters))
        for group in opt.param_groups:
            group["lr"] = lr
        scale = cycle[(it - 1) % len(cycle)]
        if scale == "objects":
            slots = torch.randint(len(train.images), (cfg.object_batch,), generator=generator)
            x, cover, labels = object_step_inputs(train, train_objects, slots,
                                                  cfg.object_jitter, generator)
            logits = heads(model.backbone(x), cover)
            loss = sum(F.cross_entropy(v.flatten(0, 1), labels.flatten()) for v in logits.values())
            loss = loss / len(logits)
        else:
            rows = torch.randint(len(train), (scale.batch,), generator=generator)
            x, labels = train.crops(rows, scale.crop_size, scale.context, generator)
            loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if it % cfg.eval_period == 0 or it == cfg.iters:
            per_size = held_out_accuracy(model, held_out, cfg.scales)
            acc = sum(per_size.values()) / len(per_size)
            history.append({"iter": it, "minutes": round((time.perf_counter() - t0) / 60, 2),
                            "loss": round(loss.item(), 4), "held_out_accuracy": round(acc, 4),
                            "held_out_accuracy_by_crop": per_size})
            if heads is not None:
                history[-1]["held_out_object_accuracy"] = object_accuracy(
                    model.backbone, heads, held_out, held_out_objects)
            bar.write(f"pretrain iter {it}: loss {loss.item():.3f}, held-out crop accuracy {acc:.3f} "
                      f"(by crop px: {per_size})"
                      + (f", objects in full images by level: {history[-1]['held_out_object_accuracy']}"
                         if heads is not None else ""))
    bar.close()
    out = Path(out)
    atomic_torch_save(model.backbone.state_dict(), out)
    card = {
        "what": "tiny backbone pretrained on object-centred crop classification"
                + (" and mask-pooled object classification in full images" if heads is not None else "")
                + " of a separate synthetic split (ImageNet stand-in)",
        "config": asdict(cfg), "init": init, "iterations": cfg.iters,
        "minutes": round((time.perf_counter() - t0) / 60, 2),
        "train_images": n - cfg.holdout_images, "held_out_images": cfg.holdout_images,
        "train_objects": len(train), "held_out_objects": len(held_out),
        "held_out_accuracy": history[-1]["held_out_accuracy"],
        "held_out_accuracy_by_crop": history[-1]["held_out_accuracy_by_crop"],
        **({"held_out_object_accuracy": history[-1]["held_out_object_accuracy"]} if heads is not None else {}),
        "num_classes": dataset.num_classes,
        "sha256": file_sha256(out), "history": history,
        "provenance": provenance(),
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card
