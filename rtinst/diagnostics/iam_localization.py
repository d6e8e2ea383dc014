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
    any resolution, resized to h x w), the object's area fraction and the effective support."""
    h, w = weights.shape[-2:]
    inside = F.interpolate(gt_masks[:, None].float(), size=(h, w), mode="bilinear",
                           align_corners=False)[:, 0] > 0.5
    return {"mass_in_object": (weights * inside).flatten(1).sum(1),
            "area_fraction": inside.flatten(1).float().mean(1),
            "support": 1.0 / weights.flatten(1).pow(2).sum(1).clamp(min=1e-12) / (h * w)}


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
    }
