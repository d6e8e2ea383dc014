"""YOLACT anchors and SSD box encoding.

Anchors (Bolya et al., Sec. 4): on every FPN level P3-P7, one anchor per aspect ratio
``a`` in ``[1, 1/2, 2]`` at every feature-map cell; the level's scale ``s`` is 24, 48, 96,
192, 384 px at 550x550 and follows the input size (``s_x = s_550 / 550 * x``). An anchor of
aspect ratio ``a`` has ``w / h = a`` and area ``s^2``: ``w = s * sqrt(a)``, ``h = s / sqrt(a)``.

``square=True`` reproduces the official implementation's "backward compatibility with a
bug" mode: every anchor is square, of side ``s * sqrt(a)`` (still one anchor per aspect
ratio, so 3 per location and the same head shapes, FLOPs and parameters).

Centres are cell centres: ``cx = (x + 0.5) * W / W_l`` (``W`` the input width, ``W_l`` the
level's width), i.e. the feature map is taken to cover the input evenly (the official code's
relative ``(x + 0.5) / W_l``).

Order (matches the head's ``(B, a*C, H, W) -> (B, H*W*a, C)`` reshape): level, then row
``y``, then column ``x``, then aspect ratio.

Boxes are ``(cx, cy, w, h)`` for anchors and ``(x1, y1, x2, y2)`` for everything else, in
input pixels. SSD encoding with variances ``(v0, v1) = (0.1, 0.2)``::

    t_x = (g_cx - a_cx) / (v0 * a_w)     t_w = log(g_w / a_w) / v1
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

# Largest log-ratio allowed when decoding widths/heights (exp overflow guard, as detectron2).
MAX_LOG_RATIO = math.log(1000.0 / 16)


def level_anchor_sizes(scale: float, aspect_ratios: Sequence[float],
                       square: bool = False) -> list[tuple[float, float]]:
    """(w, h) of the anchors of one level, one per aspect ratio (w / h = a)."""
    sizes = []
    for a in aspect_ratios:
        r = math.sqrt(float(a))
        sizes.append((scale * r, scale * r) if square else (scale * r, scale / r))
    return sizes


def generate_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    square: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """All anchors ``(A, 4)`` as ``(cx, cy, w, h)`` in input pixels.

    ``feature_sizes``: ``(H_l, W_l)`` of each level; ``image_size``: ``(H, W)`` of the input;
    ``scales``: the pixel scale of each level *at this input size* (see
    :func:`scaled_anchor_scales`). ``A = sum_l H_l * W_l * len(aspect_ratios)``.
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(f"{len(feature_sizes)} feature levels but {len(scales)} anchor scales")
    height, width = image_size
    out = []
    for (h, w), scale in zip(feature_sizes, scales):
        wh = torch.tensor(level_anchor_sizes(scale, aspect_ratios, square), dtype=dtype,
                          device=device)  # (a, 2)
        cy = (torch.arange(h, dtype=dtype, device=device) + 0.5) * (height / h)
        cx = (torch.arange(w, dtype=dtype, device=device) + 0.5) * (width / w)
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centers = torch.stack([cx, cy], dim=-1).reshape(h * w, 1, 2).expand(h * w, len(wh), 2)
        sizes = wh[None].expand(h * w, len(wh), 2)
        out.append(torch.cat([centers, sizes], dim=-1).reshape(-1, 4))
    return torch.cat(out, dim=0)


def scaled_anchor_scales(scales: Sequence[float], image_size: float,
                         reference_size: float = 550.0) -> list[float]:
    """The paper's rule for YOLACT-400/700: ``s_x = s_550 / 550 * x``."""
    return [float(s) * float(image_size) / float(reference_size) for s in scales]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    c, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([c - wh / 2, c + wh / 2], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    p1, p2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(p1 + p2) / 2, p2 - p1], dim=-1)


def encode_boxes(gt_xyxy: Tensor, anchors: Tensor,
                 variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """SSD regression targets ``(..., 4)`` of ``gt_xyxy`` w.r.t. ``anchors`` (cx, cy, w, h)."""
    v0, v1 = float(variances[0]), float(variances[1])
    g = xyxy_to_cxcywh(gt_xyxy)
    dxy = (g[..., :2] - anchors[..., :2]) / (v0 * anchors[..., 2:])
    dwh = torch.log(g[..., 2:].clamp(min=1e-6) / anchors[..., 2:]) / v1
    return torch.cat([dxy, dwh], dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor,
                 variances: Sequence[float] = (0.1, 0.2)) -> Tensor:
    """Inverse of :func:`encode_boxes`: ``(..., 4)`` deltas -> ``(x1, y1, x2, y2)``."""
    v0, v1 = float(variances[0]), float(variances[1])
    cxy = anchors[..., :2] + deltas[..., :2] * v0 * anchors[..., 2:]
    wh = anchors[..., 2:] * torch.exp((deltas[..., 2:] * v1).clamp(max=MAX_LOG_RATIO))
    return torch.cat([cxy - wh / 2, cxy + wh / 2], dim=-1)
