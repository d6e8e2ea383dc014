"""SparseInst instance activation maps: per detection (paper Figure 4), mean over a split (Figure 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from rtinst.data.build import collate_fn
from rtinst.errors import UserError
from rtinst.viz.draw import label, overlay, to_input_grid
from rtinst.viz.run import LoadedRun, Sample


def _iam_groups(result: dict) -> torch.Tensor:
    if "iam" not in result:
        raise UserError("prediction has no 'iam': IAM figures need a SparseInst run")
    iam = result["iam"]
    return iam[:, None] if iam.dim() == 3 else iam  # (N_kept, G, h, w)


def iam_figure(sample: Sample, class_names: list[str], top: int = 4, title: str = ""):
    """Top-``top`` detections of one image: mask over the image, each group's IAM, the mask.

    Rows are detections by decreasing score; IAMs share one colour scale per row (their
    values are the normalized activations, summing to 1 over the map), with a colour bar.
    """
    import matplotlib.pyplot as plt

    res = sample.result
    iams = _iam_groups(res)
    order = res["scores"].argsort(descending=True)[:top].tolist()
    groups = iams.shape[1]
    ncols = 2 + groups
    nrows = max(1, len(order))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols + 0.6, 2.3 * nrows), squeeze=False)
    gray = sample.image.mean(-1).numpy()
    masks = to_input_grid(res["mask_probs"], sample.padded, sample.size) > res.get("mask_threshold", 0.5)
    maps = to_input_grid(iams, sample.padded, sample.size)  # (N_kept, G, h, w)
    if not order:
        axes[0, 0].imshow(sample.image.numpy())
        axes[0, 0].set_title("no detection above the score threshold", fontsize=8)
    for r, k in enumerate(order):
        name = label(class_names, int(res["labels"][k]), float(res["scores"][k]))
        ax = axes[r, 0]
        ax.imshow(overlay(sample.image, masks[k:k + 1]))
        ax.set_title(f"#{r + 1}: {name}", fontsize=8)
        vmax = float(maps[k].max())
        for g in range(groups):
            ax = axes[r, 1 + g]
            ax.imshow(gray, cmap="gray")
            im = ax.imshow(maps[k, g].numpy(), cmap="jet", alpha=0.6, vmin=0, vmax=vmax)
            ax.set_title("IAM" if groups == 1 else f"IAM group {g + 1}", fontsize=8)
        cbar = fig.colorbar(im, ax=list(axes[r, 1:1 + groups]), fraction=0.03, pad=0.01)
        cbar.ax.tick_params(labelsize=6)
        ax = axes[r, -1]
        ax.imshow(masks[k].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title("predicted mask", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"SparseInst IAMs, val image {sample.image_id}", fontsize=10)
    return fig


@torch.inference_mode()
def iam_average(run: LoadedRun, max_images: int | None = None, grid: int = 32) -> torch.Tensor:
    """Mean activation of every IAM over the val split: (N, G, grid, grid).

    Each image's maps are cropped to the image (no padding) and resized to ``grid`` x
    ``grid`` so that images of different sizes average in relative coordinates, then scaled
    to a maximum of 1 per map before averaging (a map's location, not its normalization,
    is what Figure 6 shows).
    """
    if not hasattr(run.model, "forward_raw"):
        raise UserError(f"{run.run_dir}: IAMs need a SparseInst run, not {run.cfg.model.name}")
    dataset = run.val_set
    if max_images is not None:
        dataset = Subset(dataset, range(min(max_images, len(dataset))))
    total, count = None, 0
    for batch in DataLoader(dataset, batch_size=1, collate_fn=collate_fn(run.cfg.data)):
        iam = run.model.forward_raw(batch.images, need_iam=True)["iam"][0]  # (N, G, h, w)
        h, w = batch.image_sizes[0]
        stride = batch.images.shape[-1] / iam.shape[-1]
        iam = iam[..., :math.ceil(h / stride), :math.ceil(w / stride)]
        iam = F.interpolate(iam.float(), size=(grid, grid), mode="bilinear", align_corners=False)
        iam = iam / iam.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]
        total = iam if total is None else total + iam
        count += 1
    if total is None:
        raise UserError(f"{run.val_set.ann_file}: no val image to average IAMs over")
    return total / count


def iam_average_figure(mean_iam: torch.Tensor, group: int = 0, cols: int = 10, title: str = ""):
    """One small map per IAM (index n) of one group: where each instance map looks on average."""
    import matplotlib.pyplot as plt

    n, groups = mean_iam.shape[:2]
    if not 0 <= group < groups:
        raise UserError(f"group {group} out of range: the model has {groups} IAM group(s)")
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.8, 1.35 * rows + 0.5), squeeze=False)
    data = mean_iam[:, group].numpy()
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        im = ax.imshow(data[k], cmap="jet", vmin=0, vmax=1)
        ax.set_title(f"{k}", fontsize=7, pad=2)
    cbar = fig.colorbar(im, ax=list(axes.flat), fraction=0.02, pad=0.01)
    cbar.set_label("mean activation / per-image max", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    group_text = "" if groups == 1 else f", group {group + 1} of {groups}"
    fig.suptitle(title or f"Mean activation of each of the {n} IAMs over the val split{group_text}",
                 fontsize=10)
    return fig

