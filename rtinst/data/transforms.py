"""Transforms on (image, target) pairs, and batching.

``image`` is a float tensor (3, H, W); ``target`` a dict with ``masks`` (N, H, W) bool,
``boxes`` (N, 4) float xyxy, ``labels`` (N,) int64, ``image_id``, ``orig_size`` and ``size``
(both (h, w)); with crowd regions kept, also ``iscrowd`` (N,) bool until
:class:`rtinst.data.augment.SplitCrowd` moves them to ``crowd_boxes`` (M, 4). Geometric
transforms move image and masks together (bilinear for the image, nearest-exact for masks,
both on the same pixel-centre grid, so they stay aligned), drop instances whose mask
vanished, and recompute ``boxes`` from the masks.

Boxes are in pixel-edge coordinates, like COCO's ``bbox``: a mask covering columns 3..7 has
x0 = 3, x1 = 8.

Random transforms draw from ``generator`` when given, else from torch's global RNG, so they
are deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as nnf
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

Target = dict[str, Any]
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)
PER_INSTANCE_KEYS = ("masks", "boxes", "labels", "iscrowd")


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) masks -> (N, 4) float xyxy boxes in pixel-edge coordinates (empty -> zeros).

    torchvision's ``masks_to_boxes`` gives the last covered pixel index; COCO's pixel-edge
    convention is one more on the right/bottom.
    """
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    nonempty = masks.flatten(1).any(dim=1, keepdim=True)
    boxes = torchvision.ops.masks_to_boxes(masks.bool() | ~nonempty[:, :, None])
    return (boxes.float() + torch.tensor([0.0, 0.0, 1.0, 1.0])) * nonempty


def keep_instances(target: Target, keep: torch.Tensor) -> Target:
    """Select instances (a bool mask or indices) in every per-instance entry of ``target``."""
    return {k: (v[keep] if k in PER_INSTANCE_KEYS else v) for k, v in target.items()}


def _with_masks(target: Target, masks: torch.Tensor) -> Target:
    """Replace the masks, drop instances that vanished, recompute boxes and size."""
    target = dict(target, masks=masks, size=(int(masks.shape[-2]), int(masks.shape[-1])))
    target = keep_instances(target, masks.flatten(1).any(dim=1))
    target["boxes"] = masks_to_boxes(target["masks"])
    return target


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def resize(image: torch.Tensor, target: Target, size: tuple[int, int]) -> tuple[torch.Tensor, Target]:
    """Resize to exactly (h, w): bilinear (antialiased) image, nearest-exact masks."""
    h, w = size
    image = F.resize(image, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
    masks = target["masks"]
    if masks.shape[0]:
        masks = F.resize(masks.to(torch.uint8), [h, w], interpolation=InterpolationMode.NEAREST_EXACT).bool()
    else:
        masks = masks.new_zeros((0, h, w))
    return image, _with_masks(target, masks)


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomApply:
    """Apply ``transform`` (an (image, target) callable) with probability ``p``."""

    def __init__(self, transform: Callable, p: float = 0.5, generator: torch.Generator | None = None):
        self.transform, self.p, self.generator = transform, p, generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if _rand(self.generator) >= self.p:
            return image, target
        return self.transform(image, target)

    def __repr__(self) -> str:
        return f"RandomApply({self.transform!r}, p={self.p})"


class ResizeShortEdge:
    """Scale so the short edge is ``s`` and the long edge at most ``max_size`` (aspect kept).

    ``sample="choice"``: ``s`` is drawn from ``short_edges``; ``sample="range"``: uniformly
    from the integers in [short_edges[0], short_edges[1]] (scale jitter). One int: fixed.
    """

    def __init__(self, short_edges: int | Sequence[int], max_size: int = 1333, sample: str = "choice",
                 generator: torch.Generator | None = None):
        self.short_edges = (short_edges,) if isinstance(short_edges, int) else tuple(int(s) for s in short_edges)
        if sample not in ("choice", "range"):
            raise ValueError(f"sample must be 'choice' or 'range', got {sample!r}")
        if sample == "range" and len(self.short_edges) != 2:
            raise ValueError("sample='range' needs short_edges=(min, max)")
        self.max_size, self.sample, self.generator = max_size, sample, generator

    def target_size(self, h: int, w: int, short: int) -> tuple[int, int]:
        scale = short / min(h, w)
        if max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return max(1, int(round(h * scale))), max(1, int(round(w * scale)))

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.sample == "range":
            short = _randint(self.short_edges[0], self.short_edges[1], self.generator)
        else:
            short = self.short_edges[_randint(0, len(self.short_edges) - 1, self.generator)]
        return resize(image, target, self.target_size(image.shape[-2], image.shape[-1], short))

    def __repr__(self) -> str:
        return f"ResizeShortEdge({self.short_edges}, max_size={self.max_size}, sample={self.sample!r})"


class ResizeFixed:
    """Resize to exactly (h, w), ignoring the aspect ratio (YOLACT's 550x550)."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return resize(image, target, (self.h, self.w))

    def __repr__(self) -> str:
        return f"ResizeFixed({self.h}, {self.w})"


class RandomCrop:
    """Crop a random window; instances left with an empty mask are dropped.

    ``mode``: "relative" (``size`` = (fh, fw) fractions of the image), "relative_range"
    (fractions drawn uniformly from [fh, 1] and [fw, 1]), "absolute" (``size`` = (h, w)
    pixels) or "absolute_range" (``size`` = (min, max): the crop height is drawn uniformly
    from the integers in [min(H, min), min(H, max)], the width likewise with W, as
    detectron2's ``RandomCrop``). The window is clamped to the image. Applied with
    probability ``p``.
    """

    MODES = ("relative", "relative_range", "absolute", "absolute_range")

    def __init__(self, size: tuple[float, float], mode: str = "relative_range", p: float = 1.0,
                 generator: torch.Generator | None = None):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.size, self.mode, self.p, self.generator = tuple(size), mode, p, generator

    def crop_size(self, h: int, w: int) -> tuple[int, int]:
        a, b = self.size
        g = self.generator
        if self.mode == "relative":
            ch, cw = h * a, w * b
        elif self.mode == "relative_range":
            ch, cw = h * (a + (1 - a) * _rand(g)), w * (b + (1 - b) * _rand(g))
        elif self.mode == "absolute":
            ch, cw = a, b
        else:
            ch = _randint(min(h, int(a)), min(h, int(b)), g)
            cw = _randint(min(w, int(a)), min(w, int(b)), g)
        return min(h, max(1, int(round(ch)))), min(w, max(1, int(round(cw))))

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p < 1.0 and _rand(self.generator) >= self.p:
            return image, target
        h, w = image.shape[-2:]
        ch, cw = self.crop_size(h, w)
        y0 = _randint(0, h - ch, self.generator)
        x0 = _randint(0, w - cw, self.generator)
        image = image[..., y0:y0 + ch, x0:x0 + cw]
        return image, _with_masks(target, target["masks"][:, y0:y0 + ch, x0:x0 + cw])

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, mode={self.mode!r}, p={self.p})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p, self.generator = p, generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if _rand(self.generator) >= self.p:
            return image, target
        w = image.shape[-1]
        target = dict(target, masks=target["masks"].flip(-1))
        boxes = target["boxes"].clone()
        boxes[:, 0], boxes[:, 2] = w - target["boxes"][:, 2], w - target["boxes"][:, 0]
        target["boxes"] = boxes
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(image - mean) / std per channel; defaults are ImageNet's in the 0-255 RGB scale."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return (image.float() - self.mean) / self.std, target

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


@dataclass
class Batch:
    """A padded batch. ``images`` (B, 3, Hp, Wp) is zero-padded at the bottom/right to a
    multiple of ``size_divisibility``; ``image_sizes`` are the (h, w) before padding;
    ``targets[i]["masks"]`` are padded to (Hp, Wp) as well."""

    images: torch.Tensor
    image_sizes: list[tuple[int, int]]
    orig_sizes: list[tuple[int, int]]
    image_ids: list[int]
    targets: list[Target]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(v: Any) -> Any:
            return v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v

        return Batch(move(self.images), self.image_sizes, self.orig_sizes, self.image_ids,
                     [{k: move(v) for k, v in t.items()} for t in self.targets])

    def __len__(self) -> int:
        return self.images.shape[0]


def collate(batch: Sequence[tuple[torch.Tensor, Target]], size_divisibility: int = 32) -> Batch:
    """Stack (image, target) pairs into a :class:`Batch`, zero-padding to a common size."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    images = [img for img, _ in batch]
    sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
    d = max(int(size_divisibility), 1)
    hp = int(math.ceil(max(h for h, _ in sizes) / d) * d)
    wp = int(math.ceil(max(w for _, w in sizes) / d) * d)
    padded = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
    targets = []
    for i, (img, target) in enumerate(batch):
        h, w = sizes[i]
        padded[i, :, :h, :w] = img
        masks = target["masks"]
        targets.append(dict(target, masks=nnf.pad(masks, (0, wp - w, 0, hp - h))))
    return Batch(
        images=padded,
        image_sizes=sizes,
        orig_sizes=[tuple(t["orig_size"]) for _, t in batch],
        image_ids=[int(t["image_id"]) for _, t in batch],
        targets=targets,
    )
