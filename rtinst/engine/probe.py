"""Detection-scale linear probe of a (tiny) backbone's initialization.

Crop accuracy says how well a backbone classifies objects cut out and resized for it; the
detection heads instead see each object at its own size in the full image. This probe
measures the latter: the frozen backbone runs on whole train/val images of a run's dataset,
each GT object's feature is the average of a level's features over its mask, and a linear
(multinomial logistic) classifier fitted on the train objects is scored on the val objects,
overall and per COCO area bucket. It found that 64 px crop pretraining transferred badly to
the large objects (see rtinst/engine/pretrain.py) and is how a new backbone recipe is judged
before spending a 10-minute training on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtinst.config import BackboneConfig, DataConfig
from rtinst.errors import UserError

LEVELS = ("res3", "res4", "res5")
# COCO's area buckets, in pixels at the image size the backbone sees
BUCKETS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, float("inf"))}


@torch.no_grad()  # not inference_mode: the probe fits on these tensors with autograd
def pooled_object_features(backbone: torch.nn.Module, dataset, collate, num_images: int,
                           batch_size: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Mask-averaged features of every GT object of the first ``num_images`` images.

    Returns ({level: (N, C)}, labels (N,), mask areas in px (N,)).
    """
    backbone.eval()
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in LEVELS}
    labels, areas = [], []
    n = min(num_images, len(dataset))
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        levels = backbone(batch.images)
        for i, target in enumerate(batch.targets):
            masks = target["masks"].float()
            if len(masks) == 0:
                continue
            for name in LEVELS:
                fmap = levels[name][i]
                # fraction of each feature cell covered by the mask -> weights summing to 1
                cover = F.adaptive_avg_pool2d(masks[None], fmap.shape[-2:])[0]
                weights = cover / cover.sum((1, 2), keepdim=True).clamp(min=1e-6)
                feats[name].append(torch.einsum("nhw,chw->nc", weights, fmap))
            labels.append(target["labels"])
            areas.append(masks.sum((1, 2)))
    if not labels:
        raise UserError(f"{dataset.ann_file}: no annotated object in the first {n} images to probe")
    return ({k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), torch.cat(areas))


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-3,
               max_iter: int = 500) -> torch.nn.Module:
    """A standardized linear softmax classifier fitted with L-BFGS (cross-entropy + L2)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")
    z = (x - mean) / std

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return torch.nn.Sequential(_Standardize(mean, std), linear).eval()


class _Standardize(torch.nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _accuracies(correct: torch.Tensor, areas: torch.Tensor) -> dict[str, float | None]:
    out: dict[str, float | None] = {"all": round(correct.float().mean().item(), 4)}
    for name, (lo, hi) in BUCKETS.items():
        sel = (areas >= lo) & (areas < hi)
        out[name] = round(correct[sel].float().mean().item(), 4) if sel.any() else None
    return out


def detection_scale_probe(backbone_cfg: BackboneConfig, data_cfg: DataConfig,
                          train_images: int = 400, val_images: int = 200) -> dict:
    """Probe accuracy per level and for all levels concatenated (see the module docstring)."""
    from rtinst.data.build import build_dataset, build_transforms, collate_fn
    from rtinst.engine.train import init_source_record
    from rtinst.models.backbones import build_backbone

    backbone = build_backbone(backbone_cfg)
    collate = collate_fn(data_cfg)
    val = build_dataset(data_cfg, "val", progress=False)
    train = build_dataset(data_cfg, "train", progress=False)
    train.transforms = build_transforms(data_cfg, train=False)  # no augmentation: deterministic
    x_tr, y_tr, _ = pooled_object_features(backbone, train, collate, train_images)
    x_va, y_va, area_va = pooled_object_features(backbone, val, collate, val_images)
    num_classes = train.num_classes
    result: dict = {}
    for name in (*LEVELS, "all_levels"):
        if name == "all_levels":
            xt, xv = torch.cat([x_tr[k] for k in LEVELS], 1), torch.cat([x_va[k] for k in LEVELS], 1)
        else:
            xt, xv = x_tr[name], x_va[name]
        clf = fit_linear(xt, y_tr, num_classes)
        with torch.no_grad():
            result[name] = _accuracies(clf(xv).argmax(1) == y_va, area_va)
    init = init_source_record(backbone.init_source)
    return {
        "what": "linear probe: mask-averaged frozen backbone features of GT objects in full "
                "images -> class; accuracy on val objects per level and area bucket",
        "backbone": backbone_cfg.name, "init": init["backbone_init"],
        "weights_sha256": init["backbone_init_sha256"],
        "train_objects": len(y_tr), "val_objects": len(y_va), "chance": round(1 / num_classes, 4),
        "accuracy": result,
    }
