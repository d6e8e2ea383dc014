"""Oracle instance maps: would SparseInst learn in its budget if its IAMs were right?

SparseInst's heads see an instance only through its IAM-pooled feature, so a run whose maps
never focus (``rtinst bench iam``) cannot classify whatever the rest of the network could do.
This separates the two: it trains the config's own model, schedule and data with the first
K instance maps of every image *replaced by its K ground-truth masks* (area-downsampled to
the map grid; every group of Group-IAM gets the same mask) and instance map k assigned to
object k instead of the Hungarian matching; the remaining N - K maps stay learned and are
negatives. Evaluation gives the maps the val images' masks the same way. The AP it reaches
is what the backbone, encoder, mask branch, kernels and heads learn in the budget once
localization is solved: high here and low in the normal run means the limit is the IAMs
learning to localize, not the features, the losses or the post-processing.

It is a diagnostic, not a model: GT masks at test time make its AP an upper bound, and its
run folder is a scratch space (nothing enters the run cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from rtinst.config_schema import RunConfig
from rtinst.data.build import build_dataset, collate_fn
from rtinst.engine.loop import train_loop
from rtinst.engine.train import evaluate_run, resolve_device, seed_everything
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.records import config_hash

EPS = 1e-6  # sigmoid(logit(EPS)) outside the object: a negligible share of the pooled feature


def identity_match(cls_prob: torch.Tensor, mask_prob: torch.Tensor, tgt_labels: torch.Tensor,
                   tgt_masks: torch.Tensor, alpha: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance map k <-> object k (the oracle maps are built in target order)."""
    idx = torch.arange(tgt_labels.numel(), device=cls_prob.device)
    return idx, idx.clone()


def check_config(cfg: Any) -> None:
    """The oracle needs IAMs that can equal a mask: a SparseInst IAM head with sigmoid maps."""
    if getattr(cfg, "name", None) != "sparseinst" or cfg.instance_head != "iam":
        raise UserError("oracle IAM: needs a SparseInst with model.instance_head=iam")
    if cfg.iam_activation != "sigmoid":
        raise UserError(f"oracle IAM: model.iam_activation={cfg.iam_activation!r}; only "
                        "sigmoid maps can be set to a mask exactly")


class OracleIAM:
    """Installs the oracle on a SparseInst (IAM head, sigmoid maps); ``remove()`` undoes it.

    The model must then be called with targets, in eval mode too (``predict_coco(...,
    with_targets=True)``): the maps of each image come from its ``targets[b]["masks"]``.
    """

    def __init__(self, model: torch.nn.Module):
        check_config(model.cfg)
        self.model = model
        branch = model.decoder.inst_branch
        self.num_masks, self.groups = branch.num_masks, branch.groups
        self.masks: Optional[list[torch.Tensor]] = None
        self._handles = [model.register_forward_pre_hook(self._capture),
                         branch.iam_conv.register_forward_hook(self._replace)]
        model.criterion.match = identity_match

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        targets = args[1] if len(args) > 1 else None
        self.masks = None if targets is None else [t["masks"] for t in targets]

    def _replace(self, module: torch.nn.Module, inputs: tuple, logits: torch.Tensor) -> torch.Tensor:
        if self.masks is None:
            raise UserError("oracle IAM: the model was called without targets")
        out = logits.clone()
        n, (h, w) = self.num_masks, logits.shape[-2:]
        for b, masks in enumerate(self.masks):
            k = masks.shape[0]
            if k > n:
                raise UserError(f"oracle IAM: an image has {k} objects, more than "
                                f"model.num_masks={n}")
            if k == 0:
                continue
            m = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")[:, 0]
            oracle = torch.logit(m.clamp(EPS, 1 - EPS)).to(out.dtype)
            for g in range(self.groups):  # channel = g * N + n
                out[b, g * n:g * n + k] = oracle
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        del self.model.criterion.match  # back to the class's Hungarian matching


def _mean_losses(log_path: Path, last: int) -> dict[str, float]:
    rows = [json.loads(line) for line in log_path.read_text().splitlines()][-last:]
    keys = [k for k in rows[-1] if k.startswith("loss")] if rows else []
    return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys}


def oracle_iam(cfg: RunConfig, steps: Optional[int] = None, work_dir: Optional[str | Path] = None,
               progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` (``steps`` overrides ``train.max_iters``) with oracle instance maps and
    evaluate it with them; returns the record. ``work_dir``: keep the scratch run there
    (resumes from its checkpoint); default a temporary folder."""
    if steps is not None:
        if steps < 1:
            raise UserError("oracle IAM: --steps must be >= 1")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_iters=steps,
                                                                 snapshot_iters=[],
                                                                 snapshot_minutes=[]))
    check_config(cfg.model)
    device = resolve_device(cfg.device)
    train_set, val_set = build_dataset(cfg.data, "train", progress), build_dataset(cfg.data, "val", progress)
    seed_everything(cfg.seed)
    model = build_model(cfg.model)
    oracle = OracleIAM(model)
    scratch = (contextlib.nullcontext(str(work_dir)) if work_dir is not None
               else tempfile.TemporaryDirectory(prefix="oracle_iam_"))
    with scratch as folder:
        run_dir = Path(folder)
        summary = train_loop(model, train_set, collate_fn(cfg.data), cfg.train, run_dir,
                             seed=cfg.seed, device=device, num_workers=cfg.data.num_workers,
                             progress=progress)
        metrics = evaluate_run(model, cfg, val_set, run_dir, device, progress, with_targets=True)
        losses = _mean_losses(run_dir / "train_log.jsonl", last=10)
    oracle.remove()
    return {"what": "SparseInst trained and evaluated with ground-truth masks as its instance "
                    "maps (map k = object k): the AP its other parts reach in the budget once "
                    "localization is solved (an upper bound: GT masks at test time)",
            "config_hash": config_hash(cfg), "preset": cfg.preset, "seed": cfg.seed,
            "train_iterations": summary["iterations"], "step_time_s": round(summary["step_time_s"], 3),
            "final_losses": losses, "metrics": metrics, "device": str(device)}
