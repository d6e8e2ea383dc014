"""Shared drawing helpers: mask overlays, map resizing, atomic figure saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rtinst.io import atomic_path


def to_input_grid(maps: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) maps on a grid covering the padded input -> (..., H, W) over the image only.

    Maps at stride s cover the padded input; they are upsampled to the padded size and then
    cropped to the unpadded image, so every pixel lines up with the picture.
    """
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    up = F.interpolate(flat, size=padded, mode="bilinear", align_corners=False)
    h, w = size
    return up[:, 0, :h, :w].reshape(*lead, h, w)


def overlay(image: torch.Tensor | np.ndarray, masks, colors=None, alpha: float = 0.5) -> np.ndarray:
    """Blend boolean masks (N, h, w) into an (h, w, 3) [0, 1] image, one colour each."""
    import matplotlib.pyplot as plt

    if isinstance(image, torch.Tensor):
        image = image.numpy()
    if isinstance(masks, torch.Tensor):
        masks = masks.numpy()
    out = np.array(image, dtype=float, copy=True)
    masks = np.asarray(masks, dtype=bool)
    cmap = plt.get_cmap("tab10")
    for k, m in enumerate(masks):
        color = np.array(colors[k] if colors is not None else cmap(k % 10)[:3])
        out[m] = (1 - alpha) * out[m] + alpha * color
    return out


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG without leaving a half-written file behind."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def label(class_names: list[str], label: int, score: float | None = None) -> str:
    name = class_names[label] if 0 <= label < len(class_names) else str(label)
    return name if score is None else f"{name} {score:.2f}"
