"""Are a trained SparseInst's instance activation maps on their objects? Figure 4 in numbers.

SparseInst pools each instance's feature ``z`` as the IAM-weighted average of the instance
branch's map; the class, kernel and objectness heads only see ``z``. If the maps have not
learned to highlight their objects, ``z`` is close to the image's average feature and no head
can tell the classes apart, whatever the backbone knows. This measures it on the run's own
val images, for the predictions the training loss would match to each GT object (the
criterion's Hungarian matching on the model's current outputs):

- ``mass_in_object``: the share of the (normalised) map inside its GT mask, averaged over
  groups. A map spread evenly scores the object's share of the image (``area_fraction``);
  ``concentration`` = mass / area fraction, 1 for a uniform map, large for a focused one.
- ``support``: the effective number of positions the map spreads over, 1 / sum(w^2), as a
  fraction of the map (1 for a uniform map, 1 / (h w) for a single position).
- ``head_accuracy``: how often the class head's argmax is the GT class;
  ``probe_accuracy``: a linear classifier fitted on ``z`` of the train images' matched
  predictions, scored on the val ones (what the features allow, beside what the head learned).

Matched predictions include the many that the model has not learned to detect, so their maps
stay broad even in a run that segments well. ``true_positives`` measures what the paper's
Figure 4 shows instead: the final detections (after the score threshold) that are COCO true
positives (greedy by score, the same class, mask IoU >= 0.5 with a GT object not taken by a
higher-scored detection). For each, the group map that is most concentrated (smallest
effective support, chosen without looking at the object) is scored by the share of its mass
inside the object (``mass_in_object``; ``mass_near_object`` counts the object grown by one map
cell, since on a 1/8 grid a map one cell wider than its object keeps much of its mass on that
ring) and its concentration; the group-averaged map's mass is reported beside it, and
``by_object_cells`` splits both masses by the object's size on the map's grid.
With sigmoid maps only the groups that switch on are candidates (peak activation >= 0.5; the
one with the highest peak when none does): a trained instance often uses one group and keeps
the others near zero everywhere, and such an off map, once normalised, is its noise floor,
"concentrated" on an arbitrary spot (blank in a Figure 4-style picture). ``active_groups``
counts the groups that switch on; ``mass_in_object_any_group`` keeps the choice among all
groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rtinst.errors import UserError


def iam_weights(iam: torch.Tensor) -> torch.Tensor:
    """(N, G, h, w) maps -> (N, h, w) distributions: each group normalised to sum 1, then
    averaged over groups (softmax / attention maps already sum to 1; sigmoid maps do not)."""
    w = iam.flatten(2)
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    return w.mean(1).view(iam.shape[0], *iam.shape[-2:])


def localization_stats(weights: torch.Tensor, gt_masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per instance: mass of ``weights`` (N, h, w; each sums to 1) inside ``gt_masks`` (N, H, W,
    any resolution, resized to h x w), inside the object grown by one map cell (8-connected),
    the object's area fraction and its size in map cells, and the effective support."""
    h, w = weights.shape[-2:]
    inside = F.interpolate(gt_masks[:, None].float(), size=(h, w), mode="bilinear",
                           align_corners=False)[:, 0] > 0.5
    # a map that covers its object plus a one-cell halo: on a coarse grid (a 4x4-cell object
    # keeps 16 of its 36 cells' mass inside) "inside" alone reads that as unfocused
    near = F.max_pool2d(inside[:, None].float(), kernel_size=3, stride=1, padding=1)[:, 0] > 0
    return {"mass_in_object": (weights * inside).flatten(1).sum(1),
            "mass_near_object": (weights * near).flatten(1).sum(1),
            "area_fraction": inside.flatten(1).float().mean(1),
            "object_cells": inside.flatten(1).sum(1).float(),
            "support": 1.0 / weights.flatten(1).pow(2).sum(1).clamp(min=1e-12) / (h * w)}


ACTIVE_PEAK = 0.5  # a sigmoid map that reaches this somewhere is "on"


def active_groups(iam: torch.Tensor, threshold: float | None = ACTIVE_PEAK) -> torch.Tensor:
    """(N, G, h, w) maps -> (N, G) bool: the groups whose peak reaches ``threshold``; when no
    group of an instance does, its group with the highest peak. ``threshold`` None: every group
    (softmax / attention maps, which are distributions by construction)."""
    peak = iam.flatten(2).amax(-1)
    if threshold is None:
        return torch.ones_like(peak, dtype=torch.bool)
    on = peak >= threshold
    top = F.one_hot(peak.argmax(1), peak.shape[1]).bool()
    return torch.where(on.any(1, keepdim=True), on, top)


def candidate_threshold(model_cfg) -> float | None:
    """:func:`active_groups`' threshold for a SparseInst config: sigmoid IAMs can be off
    (:data:`ACTIVE_PEAK`); softmax maps and cross-attention weights are distributions by
    construction (None: every group is a candidate)."""
    sigmoid = model_cfg.instance_head == "iam" and model_cfg.iam_activation == "sigmoid"
    return ACTIVE_PEAK if sigmoid else None


def focused_group(iam: torch.Tensor, threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, G, h, w) maps -> the most concentrated candidate group of each instance (see
    :func:`active_groups`), normalised to sum 1, (N, h, w), and its index (N,). Concentrated =
    smallest effective support 1 / sum(w^2)."""
    w = iam.flatten(2)
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    sharpness = w.pow(2).sum(-1).masked_fill(~active_groups(iam, threshold), -1.0)
    best = sharpness.argmax(1)  # largest sum(w^2) = smallest support
    return w[torch.arange(len(w)), best].view(iam.shape[0], *iam.shape[-2:]), best


def true_positive_matches(masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                          gt_masks: torch.Tensor, gt_labels: torch.Tensor,
                          iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO's matching of one image's detections: by decreasing score, each detection takes the
    unmatched GT object of its class with the highest mask IoU, if that IoU >= ``iou_threshold``.
    ``masks`` (D, H, W) and ``gt_masks`` (T, H, W) are binary on the same grid. Returns the
    indices of the true-positive detections and of their GT objects."""
    if len(masks) == 0 or len(gt_masks) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    pred, gt = masks.flatten(1).float(), gt_masks.flatten(1).float()
    inter = pred @ gt.T
    iou = inter / (pred.sum(1)[:, None] + gt.sum(1)[None] - inter).clamp(min=1.0)
    iou[labels[:, None] != gt_labels[None]] = -1.0
    taken = torch.zeros(len(gt), dtype=torch.bool)
    det, obj = [], []
    for d in scores.argsort(descending=True, stable=True).tolist():
        candidates = iou[d].masked_fill(taken, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:
            taken[best] = True
            det.append(d)
            obj.append(best)
    return torch.tensor(det, dtype=torch.long), torch.tensor(obj, dtype=torch.long)


def true_positive_stats(iam: torch.Tensor, gt_masks: torch.Tensor,
                        threshold: float | None = ACTIVE_PEAK) -> dict[str, torch.Tensor]:
    """For true-positive detections' maps ``iam`` (N, G, h, w) and their objects ``gt_masks``
    (N, H, W): the most concentrated active group's mass inside the object (``threshold``: see
    :func:`active_groups`), concentration and support, which group it is, how many groups are
    active, the same mass when any group may be chosen, and the group-averaged map's mass
    inside (as for matched predictions)."""
    focused, group = focused_group(iam, threshold)
    stats = localization_stats(focused, gt_masks)
    return {"mass_in_object": stats["mass_in_object"], "mass_near_object": stats["mass_near_object"],
            "concentration": stats["mass_in_object"] / stats["area_fraction"].clamp(min=1e-6),
            "support": stats["support"], "object_cells": stats["object_cells"], "group": group,
            "active_groups": active_groups(iam, threshold).sum(1).float(),
            "mass_in_object_any_group": localization_stats(focused_group(iam)[0], gt_masks)["mass_in_object"],
            "mass_in_object_group_mean": localization_stats(iam_weights(iam), gt_masks)["mass_in_object"]}


@torch.no_grad()
def true_positive_instances(model: torch.nn.Module, dataset, collate, num_images: int,
                            batch_size: int = 8, threshold: float | None = ACTIVE_PEAK
                            ) -> dict[str, torch.Tensor]:
    """:func:`true_positive_stats` of every true-positive detection in the first
    ``num_images`` images of ``dataset`` (masks compared at the input resolution), plus the
    number of detections ``detections`` (1 element)."""
    model.eval()
    rows_out: dict[str, list[torch.Tensor]] = {}
    detections = 0
    n = min(num_images, len(dataset))
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        results = model(batch.images, extras=True)
        padded = tuple(batch.images.shape[-2:])
        for (h, w), res, target in zip(batch.image_sizes, results, batch.targets):
            detections += len(res["scores"])
            if len(res["scores"]) == 0 or len(target["labels"]) == 0:
                continue
            probs = F.interpolate(res["mask_probs"][:, None].float(), size=padded, mode="bilinear",
                                  align_corners=False)[:, 0, :h, :w]
            det, obj = true_positive_matches(probs > res["mask_threshold"], res["scores"],
                                             res["labels"], target["masks"][:, :h, :w],
                                             target["labels"])
            if len(det) == 0:
                continue
            iam = res["iam"][det]
            iam = iam[:, None] if iam.dim() == 3 else iam  # G = 1 comes without a group axis
            for key, value in true_positive_stats(iam, target["masks"][obj], threshold).items():
                rows_out.setdefault(key, []).append(value)
    out = {k: torch.cat(v) for k, v in rows_out.items()}
    out["detections"] = torch.tensor([detections])
    return out


@torch.no_grad()
def matched_instances(model: torch.nn.Module, dataset, collate, num_images: int,
                      batch_size: int = 8) -> dict[str, torch.Tensor]:
    """IAM statistics, pooled features ``z``, head argmax and GT label of every matched
    prediction in the first ``num_images`` images of ``dataset``."""
    from rtinst.models.matcher import sparseinst_match

    model.eval()
    captured: dict[str, torch.Tensor] = {}
    hook = model.decoder.inst_branch.heads.register_forward_pre_hook(
        lambda module, inputs: captured.__setitem__("z", inputs[0]))
    rows_out: dict[str, list[torch.Tensor]] = {}
    try:
        n = min(num_images, len(dataset))
        for start in range(0, n, batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
            out = model.forward_raw(batch.images, need_iam=True)
            size = tuple(out["masks"].shape[-2:])
            for i, target in enumerate(batch.targets):
                if len(target["labels"]) == 0:
                    continue
                gt = model.criterion._targets_at(target["masks"], size)
                rows, cols = sparseinst_match(out["logits"][i].sigmoid(), out["masks"][i].sigmoid(),
                                              target["labels"], gt, model.cfg.matcher_alpha)
                stats = localization_stats(iam_weights(out["iam"][i, rows]), target["masks"][cols])
                stats.update(z=captured["z"][i, rows], labels=target["labels"][cols],
                             predicted=out["logits"][i, rows].argmax(-1))
                for key, value in stats.items():
                    rows_out.setdefault(key, []).append(value)
    finally:
        hook.remove()
    if not rows_out:
        raise UserError(f"{dataset.ann_file}: no annotated object in the first {n} images")
    return {k: torch.cat(v) for k, v in rows_out.items()}


def _summary(values: torch.Tensor) -> dict[str, float]:
    return {"median": round(values.median().item(), 4), "mean": round(values.mean().item(), 4)}


def _true_positive_summary(tp: dict[str, torch.Tensor], iou_threshold: float) -> dict[str, Any]:
    count = len(tp.get("mass_in_object", ()))
    summary: dict[str, Any] = {
        "what": f"final detections that are true positives (same class, mask IoU >= "
                f"{iou_threshold} with an unclaimed GT object, greedy by score); for each, the "
                "most concentrated group map (smallest support) among the groups that switch on",
        "count": count, "detections": int(tp["detections"].item())}
    for key in ("mass_in_object", "mass_near_object", "concentration", "support", "active_groups",
                "mass_in_object_any_group", "mass_in_object_group_mean"):
        summary[key] = _summary(tp[key]) if count else None
    summary["by_object_cells"] = by_object_cells(tp) if count else []
    return summary


# Object sizes in cells of the map's grid: below 16 a 4x4 object's one-cell ring (20 cells)
# outweighs it; from 64 (8x8) on the ring is about half the object.
CELL_BINS = (0, 16, 36, 64, 144)


def by_object_cells(tp: dict[str, torch.Tensor], bins: tuple[int, ...] = CELL_BINS) -> list[dict[str, Any]]:
    """``mass_in_object`` / ``mass_near_object`` medians of the true positives whose object
    covers [lo, hi) cells of the map (the last bin is open): is the map's focus limited by the
    grid (small objects low, large ones high) or by the map itself (low at every size)?"""
    cells = tp["object_cells"]
    out = []
    for lo, hi in zip(bins, [*bins[1:], None]):
        keep = (cells >= lo) & (cells < hi) if hi is not None else cells >= lo
        n = int(keep.sum())
        out.append({"cells": [lo, hi], "count": n,
                    "mass_in_object": round(tp["mass_in_object"][keep].median().item(), 4) if n else None,
                    "mass_near_object": round(tp["mass_near_object"][keep].median().item(), 4) if n else None})
    return out


def iam_localization(run_dir: str | Path, checkpoint: str | None = None, train_images: int = 400,
                     val_images: int = 200, data_root: str | Path | None = None) -> dict[str, Any]:
    """The module docstring's measures for a SparseInst run (``checkpoint``: a file name in
    the run's ``checkpoints/`` folder, e.g. ``snapshot_325it.pt``, or a path; default: last)."""
    from rtinst.data.build import collate_fn
    from rtinst.diagnostics.probe import deterministic_train_set, fit_linear
    from rtinst.engine.restore import load_run

    run = load_run(run_dir, data_root, checkpoint)
    if run.cfg.model.name != "sparseinst":
        raise UserError(f"{run_dir}: a {run.cfg.model.name} run has no instance activation maps "
                        "(IAM localization needs a SparseInst run)")
    collate = collate_fn(run.cfg.data)
    fit = matched_instances(run.model, deterministic_train_set(run.cfg.data), collate, train_images)
    val = matched_instances(run.model, run.val_set, collate, val_images)
    probe = fit_linear(fit["z"], fit["labels"])(val["z"]) == val["labels"]
    tp = true_positive_instances(run.model, run.val_set, collate, val_images,
                                 threshold=candidate_threshold(run.cfg.model))
    counts = torch.bincount(val["labels"], minlength=run.cfg.model.num_classes)
    return {
        "what": "SparseInst IAM localization: matched predictions' maps vs their GT objects, and "
                "the class information in their pooled features (val images)",
        "run": str(run_dir), "config_hash": run.record.config_hash,
        "checkpoint": checkpoint or "last", "val_instances": len(val["labels"]),
        "train_instances": len(fit["labels"]),
        "mass_in_object": _summary(val["mass_in_object"]),
        "area_fraction": _summary(val["area_fraction"]),
        "concentration": _summary(val["mass_in_object"] / val["area_fraction"].clamp(min=1e-6)),
        "support": _summary(val["support"]),
        "head_accuracy": round((val["predicted"] == val["labels"]).float().mean().item(), 4),
        "probe_accuracy": round(probe.float().mean().item(), 4),
        "majority": round((counts.max() / counts.sum()).item(), 4),
        "true_positives": _true_positive_summary(tp, 0.5),
    }
