"""Detection-scale linear probe of a (tiny) backbone's initialization.

Crop accuracy says how well a backbone classifies objects cut out and resized for it; the
detection heads instead see each object at its own size in the full image. This probe
measures the latter: the frozen backbone runs on whole train/val images of a run's dataset,
each GT object's feature is the average of a level's features over its mask, and a linear
(multinomial logistic) classifier fitted on the train objects is scored on the val objects,
overall and per COCO area bucket. It found that 64 px crop pretraining transferred badly to
the large objects (see rtinst/diagnostics/pretrain.py) and is how a new backbone recipe is judged
before spending a 10-minute training on it.

:func:`run_stage_probe` asks the same question of a *trained* run, stage by stage (backbone
levels, then the model's neck and head feature maps): where along the network the class
information the classifier needs is kept, gained or lost by fine-tuning. Comparing its
backbone rows with the initialization's probe shows whether training eroded the pretraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from rtinst.config_schema import BackboneConfig, DataConfig
from rtinst.errors import UserError, did_you_mean
from rtinst.ops.mask_pool import mask_pool

LEVELS = ("res3", "res4", "res5")
# Feature maps probed by default in a trained run of each model (module paths; each module
# runs once per forward). Backbones give res3-res5; lists/dicts of maps give one row per map.
RUN_STAGES: dict[str, tuple[str, ...]] = {
    "yolact": ("backbone", "fpn", "protonet"),
    "sparseinst": ("backbone", "encoder", "decoder.inst_branch.convs", "decoder.mask_branch.convs"),
    "fastinst": ("backbone", "pixel_decoder"),
}
# COCO's area buckets, in pixels at the image size the backbone sees
BUCKETS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, float("inf"))}


@torch.no_grad()
def pooled_object_features(extract: Callable[[torch.Tensor], dict[str, torch.Tensor]], dataset,
                           collate, num_images: int, batch_size: int = 8,
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Mask-averaged features of every GT object of the first ``num_images`` images.

    ``extract(images)`` returns named (B, C, h, w) maps (a backbone: res3-res5).
    Returns ({name: (N, C)}, labels (N,), mask areas in px (N,)).
    """
    if isinstance(extract, torch.nn.Module):
        extract.eval()
    feats: dict[str, list[torch.Tensor]] = {}
    labels, areas = [], []
    n = min(num_images, len(dataset))
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        levels = extract(batch.images)
        for i, target in enumerate(batch.targets):
            masks = target["masks"].float()
            if len(masks) == 0:
                continue
            for name, level in levels.items():
                feats.setdefault(name, []).append(mask_pool(masks[None], level[i:i + 1].float())[0])
            labels.append(target["labels"])
            areas.append(masks.sum((1, 2)))
    if not labels:
        raise UserError(f"{dataset.ann_file}: no annotated object in the first {n} images to probe")
    return ({k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), torch.cat(areas))


def fit_linear(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, max_iter: int = 500
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A standardized multinomial logistic regression (scikit-learn, L-BFGS) minimising
    mean cross-entropy + ``l2`` * ||W||^2; returns ``predict(x) -> labels``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # sklearn minimises C * sum(CE) + ||W||^2 / 2, i.e. mean CE + ||W||^2 / (2 C n)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (2.0 * l2 * len(y)),
                                                             max_iter=max_iter))
    clf.fit(x.double().numpy(), y.numpy())

    def predict(features: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(clf.predict(features.double().numpy())).to(y.dtype)
    return predict


def _accuracies(correct: torch.Tensor, areas: torch.Tensor) -> dict[str, float | None]:
    out: dict[str, float | None] = {"all": round(correct.float().mean().item(), 4)}
    for name, (lo, hi) in BUCKETS.items():
        sel = (areas >= lo) & (areas < hi)
        out[name] = round(correct[sel].float().mean().item(), 4) if sel.any() else None
    return out


def deterministic_train_set(data_cfg: DataConfig):
    """The train split with test-time resizing and no augmentation (same features each call)."""
    from rtinst.data.build import build_dataset, build_transforms

    train = build_dataset(data_cfg, "train", progress=False)
    train.transforms = build_transforms(data_cfg, train=False)
    return train


def _train_val_features(extract: Callable, data_cfg: DataConfig, val_set, train_images: int,
                        val_images: int):
    """Pooled GT-object features of the deterministic train split and of ``val_set``:
    (x_tr, y_tr, x_va, y_va, val areas, num classes)."""
    from rtinst.data.build import collate_fn

    collate = collate_fn(data_cfg)
    train = deterministic_train_set(data_cfg)
    x_tr, y_tr, _ = pooled_object_features(extract, train, collate, train_images)
    x_va, y_va, area_va = pooled_object_features(extract, val_set, collate, val_images)
    return x_tr, y_tr, x_va, y_va, area_va, train.num_classes


def _probe_accuracy(x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor,
                    y_va: torch.Tensor, area_va: torch.Tensor) -> dict[str, float | None]:
    return _accuracies(fit_linear(x_tr, y_tr)(x_va) == y_va, area_va)


def detection_scale_probe(backbone_cfg: BackboneConfig, data_cfg: DataConfig,
                          train_images: int = 400, val_images: int = 200) -> dict:
    """Probe accuracy per level and for all levels concatenated (see the module docstring)."""
    from rtinst.data.build import build_dataset
    from rtinst.engine.train import init_source_record
    from rtinst.models.backbones import build_backbone

    backbone = build_backbone(backbone_cfg)
    val = build_dataset(data_cfg, "val", progress=False)
    x_tr, y_tr, x_va, y_va, area_va, num_classes = _train_val_features(
        backbone, data_cfg, val, train_images, val_images)
    result: dict = {}
    for name in (*LEVELS, "all_levels"):
        if name == "all_levels":
            xt, xv = torch.cat([x_tr[k] for k in LEVELS], 1), torch.cat([x_va[k] for k in LEVELS], 1)
        else:
            xt, xv = x_tr[name], x_va[name]
        result[name] = _probe_accuracy(xt, y_tr, xv, y_va, area_va)
    init = init_source_record(backbone.init_source)
    return {
        "what": "linear probe: mask-averaged frozen backbone features of GT objects in full "
                "images -> class; accuracy on val objects per level and area bucket",
        "backbone": backbone_cfg.name, "init": init["backbone_init"],
        "weights_sha256": init["backbone_init_sha256"],
        "train_objects": len(y_tr), "val_objects": len(y_va), "chance": round(1 / num_classes, 4),
        "accuracy": result,
    }


def _maps(name: str, output: Any) -> dict[str, torch.Tensor]:
    """The 4-D feature maps in a module's output, named ``name``, ``name.key`` or ``name[i]``."""
    if isinstance(output, torch.Tensor):
        return {name: output} if output.dim() == 4 else {}
    items = output.items() if isinstance(output, dict) else enumerate(output) \
        if isinstance(output, (list, tuple)) else ()
    maps: dict[str, torch.Tensor] = {}
    for key, value in items:
        sub = f"{name}.{key}" if isinstance(key, str) else f"{name}[{key}]"
        if value is not None:
            maps.update(_maps(sub, value))
    return maps


class StageFeatures:
    """``extract(images)`` for :func:`pooled_object_features`: runs the whole model in eval
    mode and returns the maps that the named submodules produced on the way."""

    def __init__(self, model: torch.nn.Module, stages: tuple[str, ...]):
        self.model, self.maps = model.eval(), {}
        names = [n for n, _ in model.named_modules() if n]
        self.hooks = []
        for path in stages:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise UserError(f"probe stage {path!r}: {type(model).__name__} has no such "
                                f"submodule{did_you_mean(path, names, cutoff=0.6)}") from None
            self.hooks.append(module.register_forward_hook(self._keep(path)))

    def _keep(self, path: str) -> Callable:
        def hook(module, inputs, output):
            self.maps.update(_maps(path, output))
        return hook

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.maps = {}
        self.model(images)
        return dict(self.maps)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def run_stage_probe(run_dir: str | Path, stages: tuple[str, ...] | None = None,
                    train_images: int = 400, val_images: int = 200,
                    data_root: str | Path | None = None) -> dict:
    """Linear probe of a trained run's feature maps, stage by stage (see the module docstring).

    The probe is fitted on the GT objects of the run's train split (test-time resizing, no
    augmentation) and scored on its val split; ``stages`` are module paths (default
    :data:`RUN_STAGES` of the run's model).
    """
    from rtinst.engine.restore import load_run

    run = load_run(run_dir, data_root)
    model_name = run.cfg.model.name
    stages = tuple(stages or RUN_STAGES.get(model_name, ("backbone",)))
    extract = StageFeatures(run.model, stages)
    try:
        x_tr, y_tr, x_va, y_va, area_va, num_classes = _train_val_features(
            extract, run.cfg.data, run.val_set, train_images, val_images)
    finally:
        extract.close()
    result = {name: _probe_accuracy(x_tr[name], y_tr, x_va[name], y_va, area_va) for name in x_tr}
    return {
        "what": "linear probe of a trained run: mask-averaged features of GT objects at each "
                "stage -> class; accuracy on val objects per stage and area bucket",
        "run": str(run_dir), "model": model_name, "config_hash": run.record.config_hash,
        "stages": list(stages), "train_objects": len(y_tr), "val_objects": len(y_va),
        "chance": round(1 / num_classes, 4), "accuracy": result,
    }
