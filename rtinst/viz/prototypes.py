"""YOLACT prototypes (paper Figure 5), coefficient vectors and the mask assembly, step by step."""

from __future__ import annotations

import numpy as np
import torch

from rtinst.errors import UserError
from rtinst.models.yolact_loss import crop_region
from rtinst.viz.draw import label, overlay, to_input_grid
from rtinst.viz.run import Sample


def _protos(sample: Sample) -> torch.Tensor:
    if "prototypes" not in sample.result:
        raise UserError("prediction has no 'prototypes': prototype figures need a YOLACT run "
                        "with mask_type=prototypes")
    return sample.result["prototypes"]  # (k, h, w), ReLU outputs


def prototypes_figure(samples: list[Sample], show: int = 8, title: str = ""):
    """Rows: images; columns: the image, then prototypes 1..``show`` over the image grid.

    Prototypes are ordered by index (the same prototype in every row) and share one colour
    scale per row; their values are ReLU activations (>= 0), with a colour bar.
    """
    import matplotlib.pyplot as plt

    if not samples:
        raise UserError("prototypes_figure: no images given")
    k = _protos(samples[0]).shape[0]
    show = min(show, k)
    fig, axes = plt.subplots(len(samples), show + 1, figsize=(1.9 * (show + 1) + 0.6, 1.95 * len(samples)),
                             squeeze=False)
    for r, sample in enumerate(samples):
        maps = to_input_grid(_protos(sample)[:show], sample.padded, sample.size).numpy()
        axes[r, 0].imshow(sample.image.numpy())
        axes[r, 0].set_title(f"val image {sample.image_id}", fontsize=8)
        vmax = float(maps.max()) or 1.0
        for j in range(show):
            im = axes[r, j + 1].imshow(maps[j], cmap="viridis", vmin=0, vmax=vmax)
            if r == 0:
                axes[r, j + 1].set_title(f"prototype {j + 1}", fontsize=8)
        cbar = fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.015, pad=0.01)
        cbar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"YOLACT prototypes (first {show} of k={k}; ReLU activations)", fontsize=10)
    return fig


def coefficients_figure(sample: Sample, class_names: list[str], top: int = 12, title: str = ""):
    """Heat map of the tanh coefficient vectors (detections x k) of the top detections."""
    import matplotlib.pyplot as plt

    _protos(sample)
    res = sample.result
    order = res["scores"].argsort(descending=True)[:top]
    coeffs = res["coefficients"][order].numpy()
    names = [label(class_names, int(res["labels"][i]), float(res["scores"][i])) for i in order]
    k = res["prototypes"].shape[0]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.22 * k + 2.5), 0.32 * max(len(names), 1) + 1.4))
    im = ax.imshow(coeffs if len(names) else np.zeros((1, k)), cmap="RdBu_r", vmin=-1, vmax=1,
                   aspect="auto")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xticks(range(0, k, max(1, k // 16)), [str(j + 1) for j in range(0, k, max(1, k // 16))],
                  fontsize=7)
    ax.set_xlabel("prototype")
    ax.set_ylabel("detection (class score)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).set_label("coefficient (tanh)", fontsize=8)
    ax.set_title(title or f"Mask coefficients of the top {len(names)} detections, val image "
                 f"{sample.image_id}", fontsize=9)
    return fig


def assemble(sample: Sample, i: int) -> dict[str, torch.Tensor]:
    """Detection ``i``'s mask, step by step on the prototype grid: ``linear`` = P c,
    ``sigmoid`` = sigmoid(P c), ``cropped`` = zero outside the predicted box (the model's
    ``mask_probs[i]``; the box is cropped on the grid exactly as the model does)."""
    protos = _protos(sample)
    res = sample.result
    k, h, w = protos.shape
    linear = torch.einsum("khw,k->hw", protos, res["coefficients"][i])
    prob = linear.sigmoid()
    scale = torch.tensor([w / sample.padded[1], h / sample.padded[0]] * 2)
    cropped = prob * crop_region(res["boxes"][i:i + 1] * scale, h, w)[0]
    return {"linear": linear, "sigmoid": prob, "cropped": cropped}


def assembly_figure(sample: Sample, class_names: list[str], detection: int = 0, show: int = 4,
                    title: str = ""):
    """One instance: its ``show`` prototypes with the largest |coefficient|, the linear
    combination P c, sigmoid(P c), the crop by the predicted box and the final mask.

    ``detection`` is the rank by score (0 = best).
    """
    import matplotlib.pyplot as plt

    protos = _protos(sample)
    res = sample.result
    order = res["scores"].argsort(descending=True)
    if not 0 <= detection < len(order):
        raise UserError(f"detection {detection} out of range: {len(order)} detections in val image "
                        f"{sample.image_id}")
    i = int(order[detection])
    steps = assemble(sample, i)
    coeff = res["coefficients"][i]
    k = protos.shape[0]
    x1, y1, x2, y2 = res["boxes"][i].tolist()
    linear, prob, cropped = steps["linear"], steps["sigmoid"], steps["cropped"]
    final = to_input_grid(cropped, sample.padded, sample.size) > res.get("mask_threshold", 0.5)

    top = coeff.abs().argsort(descending=True)[:show].tolist()
    to_img = lambda m: to_input_grid(m, sample.padded, sample.size).numpy()  # noqa: E731
    fig, axes = plt.subplots(2, max(show, 4), figsize=(2.4 * max(show, 4), 5.0), squeeze=False)
    pmax = float(protos[top].max()) or 1.0
    for j, p in enumerate(top):
        ax = axes[0, j]
        im = ax.imshow(to_img(protos[p]), cmap="viridis", vmin=0, vmax=pmax)
        ax.set_title(f"prototype {p + 1}, c = {coeff[p]:+.2f}", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.015, pad=0.01).ax.tick_params(labelsize=6)
    for ax in axes[0, show:]:
        ax.axis("off")
    lin = to_img(linear)
    bound = float(np.abs(lin).max()) or 1.0
    steps = [(lin, "P c (all k prototypes)", "RdBu_r", -bound, bound),
             (to_img(prob), "sigmoid(P c)", "magma", 0, 1),
             (to_img(cropped), "cropped by the predicted box", "magma", 0, 1)]
    for ax, (data, name, cmap, lo, hi) in zip(axes[1], steps):
        im = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    ax = axes[1, 3]
    ax.imshow(overlay(sample.image, final[None]))
    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=1))
    ax.set_title(f"mask > {res.get('mask_threshold', 0.5)}: "
                 f"{label(class_names, int(res['labels'][i]), float(res['scores'][i]))}", fontsize=8)
    for ax in axes[1, 4:]:
        ax.axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"YOLACT mask assembly, detection #{detection + 1} of val image "
                 f"{sample.image_id} (k={k})", fontsize=10)
    return fig
