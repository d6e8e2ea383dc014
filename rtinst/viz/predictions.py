"""One image with its predicted masks drawn (``rtinst predict``), labelled by class and score."""

from __future__ import annotations

from pathlib import Path

import torch

from rtinst.viz.draw import label, overlay, save_figure


def draw_predictions(image: torch.Tensor, masks: torch.Tensor, labels: list[int],
                     scores: list[float], class_names: list[str], path: str | Path) -> Path:
    """``image`` (3, H, W) 0-255 RGB, ``masks`` (N, H, W) bool at the image's size -> PNG."""
    import matplotlib.pyplot as plt

    h, w = image.shape[-2:]
    picture = overlay(image.permute(1, 2, 0) / 255.0, masks)
    fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
    ax.imshow(picture.clip(0, 1))
    for k, (m, c, s) in enumerate(zip(masks, labels, scores)):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys):
            ax.text(float(xs.float().mean()), float(ys.float().mean()), label(class_names, c, s),
                    fontsize=7, color="white", ha="center",
                    bbox={"facecolor": plt.get_cmap("tab10")(k % 10), "alpha": 0.7, "pad": 1,
                          "linewidth": 0})
    ax.set_axis_off()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
