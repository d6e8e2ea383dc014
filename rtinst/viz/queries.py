"""FastInst instance activation-guided queries: where they are picked (paper Figure 3)."""

from __future__ import annotations

import math

from rtinst.config_schema import RunConfig
from rtinst.errors import UserError
from rtinst.viz.draw import label, overlay, to_input_grid
from rtinst.viz.run import Sample


def ia_loss_variant(cfg: RunConfig) -> str:
    """The Table 6f name of a FastInst run's IA loss."""
    m = cfg.model
    if getattr(m, "query_type", None) != "ia_guided":
        return f"{getattr(m, 'query_type', cfg.model.name)} queries"
    if not m.ia_loss_matching:
        return "IA loss: dense semantic targets"
    return "IA loss: matching + location cost" if m.ia_loss_location_cost else "IA loss: matching, no location cost"


def _locations(sample: Sample):
    if "query_locations" not in sample.result:
        raise UserError("prediction has no 'query_locations': query figures need a FastInst run "
                        "with query_type=ia_guided")
    return sample.result["query_locations"]


def query_locations_figure(panels: list[tuple[str, Sample]], class_names: list[str],
                           min_score: float = 0.3, title: str = ""):
    """The ground truth, then for each (name, sample) every IA query's location.

    All panels must show the same val image. Small white dots: all N_a IA queries; large
    coloured markers: the queries behind the detections scoring >= ``min_score``, in the
    colour of their mask (drawn translucent underneath).
    """
    import matplotlib.pyplot as plt

    if not panels:
        raise UserError("query_locations_figure: no run given")
    ids = {s.image_id for _, s in panels}
    if len(ids) > 1:
        raise UserError(f"query_locations_figure: panels show different images {sorted(ids)}")
    gt = panels[0][1]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.4 * (len(panels) + 1), 3.4), squeeze=False,
                             layout="constrained")
    ax = axes[0, 0]
    ax.imshow(overlay(gt.image, gt.gt_masks.numpy()))
    for k, (m, c) in enumerate(zip(gt.gt_masks, gt.gt_labels)):
        ys, xs = m.nonzero(as_tuple=True)
        if len(xs):
            ax.text(float(xs.float().mean()), float(ys.float().mean()), class_names[int(c)],
                    fontsize=6, color="white", ha="center",
                    bbox={"facecolor": cmap(k % 10), "alpha": 0.7, "pad": 1})
    ax.set_title(f"ground truth ({len(gt.gt_labels)} instances)", fontsize=8)
    for ax, (name, sample) in zip(axes[0, 1:], panels):
        res = sample.result
        loc = _locations(sample).numpy()
        keep = (res["scores"] >= min_score).nonzero(as_tuple=True)[0].tolist()
        masks = to_input_grid(res["mask_probs"][keep], sample.padded, sample.size) > 0.5
        ax.imshow(overlay(sample.image, masks.numpy(), alpha=0.35))
        ax.scatter(loc[:, 0], loc[:, 1], s=6, c="white", edgecolors="black", linewidths=0.3,
                   label=f"all {len(loc)} IA queries")
        for j, d in enumerate(keep):
            q = int(res["query_index"][d])
            ax.scatter(loc[q, 0], loc[q, 1], s=60, marker="*", color=cmap(j % 10),
                       edgecolors="black", linewidths=0.5)
        ax.scatter([], [], s=60, marker="*", c="gray", label=f"{len(keep)} detections >= {min_score}")
        ax.legend(loc="lower left", fontsize=6, framealpha=0.7)
        ax.set_title(name, fontsize=8)
        h, w = sample.size
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"FastInst IA-guided query locations, val image {gt.image_id}", fontsize=10)
    return fig


def query_masks_figure(sample: Sample, class_names: list[str], top: int = 6, cols: int = 3,
                       title: str = ""):
    """The top detections, each as its mask with the location of the query that made it."""
    import matplotlib.pyplot as plt

    res = sample.result
    loc = _locations(sample)
    order = res["scores"].argsort(descending=True)[:top].tolist()
    rows = max(1, math.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False,
                             layout="constrained")
    masks = to_input_grid(res["mask_probs"][order], sample.padded, sample.size) > 0.5
    h, w = sample.size
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.imshow(sample.image.numpy())
        ax.axis("off")
    for j, d in enumerate(order):
        ax = axes.flat[j]
        ax.axis("on")
        ax.imshow(overlay(sample.image, masks[j:j + 1].numpy()))
        q = int(res["query_index"][d])
        x, y = loc[q].tolist()
        ax.scatter([x], [y], s=90, marker="*", color="yellow", edgecolors="black", linewidths=0.6)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"{label(class_names, int(res['labels'][d]), float(res['scores'][d]))}, "
                     f"query {q}", fontsize=8)
    fig.suptitle(title or f"FastInst masks and their query location (star), val image "
                 f"{sample.image_id}", fontsize=10)
    return fig
