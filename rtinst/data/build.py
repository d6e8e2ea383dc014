"""From a ``DataConfig`` to datasets, transforms and a collate function.

The embedded synthetic dataset is generated on first use under ``data.root`` (under a
file lock, so parallel runs of a sweep generate it once), and checked against the config's
size afterwards so a dataset made with other settings is never used silently.
"""

from __future__ import annotations

import fcntl
import functools
import json
from pathlib import Path
from typing import Callable

from rtinst import paths
from rtinst.config import DataConfig
from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.transforms import (
    Compose,
    Normalize,
    RandomHorizontalFlip,
    ResizeFixed,
    ResizeShortEdge,
    collate,
)
from rtinst.errors import UserError


def split_paths(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    root = paths.resolve(cfg.root)
    if split == "train":
        return root / cfg.train_ann, root / cfg.train_images
    return root / cfg.val_ann, root / cfg.val_images


def ensure_synthetic(cfg: DataConfig, progress: bool = True) -> None:
    """Generate the synthetic dataset of ``cfg`` under ``cfg.root`` unless it is there.

    The generator's arguments are stored next to the data; a folder made with other
    arguments is an error rather than silently the wrong dataset.
    """
    from rtinst.data.synthetic import GENERATION_FILE, generate_synthetic

    root = paths.resolve(cfg.root)  # not the current folder: a notebook's kernel is elsewhere
    wanted = {"train": cfg.synthetic_train, "val": cfg.synthetic_val,
              "seed": cfg.synthetic_seed, "size": cfg.synthetic_size}
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first to finish
        if not (root / GENERATION_FILE).is_file():
            generate_synthetic(root, cfg.synthetic_train, cfg.synthetic_val, cfg.synthetic_seed,
                               cfg.synthetic_size, progress=progress)
    found = json.loads((root / GENERATION_FILE).read_text())
    if found != wanted:
        diff = ", ".join(f"{k} {found.get(k)} (config: {v})" for k, v in wanted.items()
                         if found.get(k) != v)
        raise UserError(f"{root}: synthetic data was generated with {diff}; delete {root} "
                        f"to regenerate it, or point data.root elsewhere")


def build_transforms(cfg: DataConfig, train: bool) -> Callable:
    if cfg.fixed_size is not None:  # YOLACT: square input, aspect ratio not kept
        resize = ResizeFixed(cfg.fixed_size, cfg.fixed_size)
    elif train:
        resize = ResizeShortEdge(cfg.train_short_edge, cfg.train_max_size,
                                 sample="range" if len(cfg.train_short_edge) == 2 else "choice")
    else:
        resize = ResizeShortEdge(cfg.test_short_edge, cfg.test_max_size)
    steps = [resize]
    if train and cfg.hflip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.hflip_prob))
    steps.append(Normalize())
    return Compose(steps)


def build_dataset(cfg: DataConfig, split: str, progress: bool = True) -> CocoInstanceDataset:
    """The ``train`` or ``val`` dataset of ``cfg`` with its transforms."""
    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg, progress)
    ann, images = split_paths(cfg, split)
    if not ann.is_file():
        raise UserError(f"data.{split}_ann: annotation file not found: {ann}")
    return CocoInstanceDataset(ann, images, transforms=build_transforms(cfg, split == "train"),
                               training=split == "train")


def collate_fn(cfg: DataConfig) -> Callable:
    return functools.partial(collate, size_divisibility=cfg.size_divisibility)
