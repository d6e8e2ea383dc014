"""A toy detector and tiny base configs for the sweep tests (not a test module).

Registered through ``RTINST_BUILD_MODEL=tests/_sweep_toy.py:build`` so that it reaches pool
workers, submitit jobs and papermill kernels. It follows the model contract (losses in
training, per-image predictions in eval). Switches read from the model config:
``kernel_dim == 13``: the loss becomes NaN (a failing run); $RTINST_TOY_SLEEP: seconds to
sleep per training step (a slow run to kill); $RTINST_TOY_INTERRUPT_AFTER=N: Ctrl-C
(KeyboardInterrupt) in the training step after N completed ones (an interrupted run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn


class BlobDetector(nn.Module):
    """Per class, one mask = its learned per-pixel class map (stride 8)."""

    def __init__(self, cfg):
        super().__init__()
        self.nan = getattr(cfg, "kernel_dim", 0) == 13
        self.backbone = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.head = nn.Conv2d(8, cfg.num_classes, 1)
        self.backbone.init_source = "scratch"
        self.steps = 0

    def forward(self, images, targets=None):
        logits = self.head(torch.relu(self.backbone(images)))
        if self.training:
            time.sleep(float(os.environ.get("RTINST_TOY_SLEEP", "0")))
            interrupt = os.environ.get("RTINST_TOY_INTERRUPT_AFTER")
            if interrupt is not None and self.steps == int(interrupt):
                raise KeyboardInterrupt
            self.steps += 1
            sem = torch.zeros_like(logits)
            for i, t in enumerate(targets):
                m = nn.functional.interpolate(t["masks"][None].float(), size=logits.shape[-2:])[0]
                for mask, label in zip(m, t["labels"]):
                    sem[i, label] = torch.maximum(sem[i, label], mask)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, sem)
            return {"loss_sem": loss * float("nan") if self.nan else loss}
        probs = logits.sigmoid()
        k = probs.shape[1]
        return [{"scores": p.flatten(1).max(1).values, "labels": torch.arange(k), "mask_probs": p,
                 "mask_threshold": 0.5} for p in probs]


def build(cfg):
    return BlobDetector(cfg)


HOOK = f"{Path(__file__).resolve()}:build"

BASE_CONFIG = """\
preset: {preset}
model: {{name: sparseinst, num_classes: 10, backbone: {{name: tiny, pretrained: none}}}}
data:
  root: {data_root}
  synthetic_train: 6
  synthetic_val: 3
  synthetic_size: 96
  train_short_edge: [64, 96]
  train_max_size: 96
  test_short_edge: 72
  test_max_size: 96
  num_workers: 0
train: {{max_iters: {iters}, batch_size: 2, lr: 0.01, warmup_iters: 0, checkpoint_period: 1, log_period: 1}}
eval: {{tide: false}}
device: cpu
"""

SPEC = """\
paper: sparseinst
table: toy_objectness
title: "toy spec on SparseInst Table 6"
paper_csv: sparseinst/table6_objectness.csv
model: sparseinst
base_config: {base_dir}/{{preset}}.yaml
metrics: [ap, ap50]
cost_metrics: [gflops, params_m]
cost_input_size: [64, 64]
baseline: rescore CE
rows:
  - {{label: "off", match: {{objectness: false}}, overrides: ["model.objectness='off'"]}}
  - {{label: no rescore, match: {{rescore: false}}, overrides: [model.objectness=no_rescore{extra}]}}
  - {{label: rescore CE, match: {{rescore: true, objectness_loss: CE}}}}
  - {{label: rescore L1, match: {{objectness_loss: L1}}, implemented: false}}
claims:
  - {{metric: ap, a: rescore CE, op: ">", b: "off"}}
"""


def write_fixture(folder: Path, iters: int = 3, nan_row: bool = False,
                  data_root: Path | None = None) -> Path:
    """Base configs (smoke + coco) and a spec in ``folder``; returns the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    for preset in ("smoke", "coco"):
        (folder / f"{preset}.yaml").write_text(
            BASE_CONFIG.format(preset=preset, data_root=data_root or folder / "data", iters=iters))
    spec = folder / "toy.yaml"
    extra = ", model.kernel_dim=13" if nan_row else ""
    spec.write_text(SPEC.format(base_dir=folder, extra=extra))
    return spec
