"""From a ``DataConfig`` to datasets, transforms and a collate function.

The embedded synthetic dataset is generated on first use under ``data.root`` (under a
file lock, so parallel runs of a sweep generate it once), and checked against the config's
sizes, seed and difficulty level afterwards so a dataset made with other settings is never
used silently.
"""

from __future__ import annotations

import fcntl
import functools
import json
import sys
from pathlib import Path
from typing import Callable

from rtinst import paths
from rtinst.config import ConfigError
from rtinst.config_schema import DataConfig
from rtinst.data.augment import DiscardSmallBoxes, SplitCrowd, ssd_augmentation
from rtinst.data.coco import CocoInstanceDataset
from rtinst.data.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES, config_difficulty
from rtinst.data.transforms import (
    Compose,
    Normalize,
    RandomApply,
    RandomCrop,
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


def ensure_synthetic(cfg: DataConfig, progress: bool = True, workers: int | None = None) -> bool:
    """Generate the synthetic dataset of ``cfg`` under ``cfg.root`` unless it is there;
    True when it was generated now.

    The generator's arguments are stored next to the data; a folder made with other
    arguments (sizes, seed, level, knobs) is an error rather than silently the wrong dataset.
    """
    from rtinst.data.synthetic import GENERATION_FILE, generate_synthetic, generation_record

    difficulty = config_difficulty(cfg)  # a bad level or knob fails before any folder is made
    root = paths.resolve(cfg.root)  # not the current folder: a notebook's kernel is elsewhere
    wanted = generation_record(cfg.synthetic_train, cfg.synthetic_val, cfg.synthetic_seed, difficulty)
    root.mkdir(parents=True, exist_ok=True)
    generated = False
    with open(root / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first to finish
        if not (root / GENERATION_FILE).is_file():
            generate_synthetic(root, cfg.synthetic_train, cfg.synthetic_val, cfg.synthetic_seed,
                               workers=workers, progress=progress, difficulty=difficulty)
            generated = True
    found = json.loads((root / GENERATION_FILE).read_text())
    if found != wanted:
        raise UserError(f"{root}: synthetic data was generated with {_differences(found, wanted)}; "
                        f"delete {root} to regenerate it, or point data.root elsewhere")
    return generated


def _differences(found: dict, wanted: dict) -> str:
    """``size 96 (config: 128), difficulty hard (config: easy), objects [4, 10] (config: [1, 1])``:
    the level and each knob on its own, a folder of the default level read as ``hard``."""
    def flat(record: dict) -> dict:
        generator = record.get("generator") or DIFFICULTIES[DEFAULT_DIFFICULTY].describe()
        return {**{k: v for k, v in record.items() if k != "generator"},
                "difficulty": record.get("difficulty", DEFAULT_DIFFICULTY),
                **{k: v for k, v in generator.items() if k != "size"}}

    f, w = flat(found), flat(wanted)
    return ", ".join(f"{k} {f.get(k)} (config: {v})" for k, v in w.items() if f.get(k) != v)


def _check_augment(cfg: DataConfig) -> None:
    if cfg.crop_prob > 1 or cfg.hflip_prob > 1:
        raise ConfigError("data.crop_prob and data.hflip_prob are probabilities: at most 1")
    if len(cfg.crop_size) != 2 or cfg.crop_size[0] > cfg.crop_size[1]:
        raise ConfigError(f"data.crop_size: needs [min, max] with min <= max, got {cfg.crop_size}")
    if not cfg.crop_short_edge:
        raise ConfigError("data.crop_short_edge: needs at least one short-edge size")
    if cfg.random_sample_crop and not cfg.sample_crop_min_iou:
        raise ConfigError("data.sample_crop_min_iou: needs at least one option")
    ssd = cfg.photometric_distort or cfg.expand or cfg.random_sample_crop
    if ssd and cfg.crop_prob > 0:
        raise ConfigError("data.crop_prob (FastInst/SparseInst crop) and YOLACT's SSD augmentation "
                          "(data.photometric_distort / expand / random_sample_crop) exclude each other")


def build_transforms(cfg: DataConfig, train: bool) -> Callable:
    """Training: [crop branch | SSD augmentation], resize, flip, [small-box discard],
    [crowd split], normalize. Test: resize, normalize."""
    if train:
        _check_augment(cfg)
    steps: list[Callable] = []
    if train:
        steps += ssd_augmentation(cfg.photometric_distort, cfg.expand, cfg.random_sample_crop,
                                  cfg.sample_crop_min_iou)
    if train and cfg.crop_prob > 0:
        # FastInst/SparseInst dataset mappers: np.random.rand() > 0.5 picks this branch;
        # detectron2's ResizeShortestEdge default max_size is unbounded.
        steps.append(RandomApply(Compose([
            ResizeShortEdge(cfg.crop_short_edge, max_size=sys.maxsize),
            RandomCrop(tuple(cfg.crop_size), mode="absolute_range"),
        ]), p=cfg.crop_prob))
    if cfg.fixed_size is not None:  # YOLACT: square input, aspect ratio not kept
        steps.append(ResizeFixed(cfg.fixed_size, cfg.fixed_size))
    elif train:
        steps.append(ResizeShortEdge(cfg.train_short_edge, cfg.train_max_size,
                                     sample="range" if len(cfg.train_short_edge) == 2 else "choice"))
    else:
        steps.append(ResizeShortEdge(cfg.test_short_edge, cfg.test_max_size))
    if train and cfg.hflip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.hflip_prob))
    if train and cfg.min_box_size >= 1:
        steps.append(DiscardSmallBoxes(cfg.min_box_size))
    if train and cfg.keep_crowd:
        steps.append(SplitCrowd())
    steps.append(Normalize())
    return Compose(steps)


def build_dataset(cfg: DataConfig, split: str, progress: bool = True) -> CocoInstanceDataset:
    """The ``train`` or ``val`` dataset of ``cfg`` with its transforms."""
    if cfg.dataset == "synthetic":
        ensure_synthetic(cfg, progress)
    ann, images = split_paths(cfg, split)
    if not ann.is_file():
        raise UserError(f"data.{split}_ann: annotation file not found: {ann}")
    train = split == "train"
    return CocoInstanceDataset(ann, images, transforms=build_transforms(cfg, train), training=train,
                               keep_crowd=train and cfg.keep_crowd)


def collate_fn(cfg: DataConfig) -> Callable:
    return functools.partial(collate, size_divisibility=cfg.size_divisibility)
