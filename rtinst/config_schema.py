"""What a run config holds: one dataclass per section, with defaults, minimums and hash marks.

A run is fully described by one :class:`RunConfig` (``model`` + ``data`` + ``train`` +
``eval`` + ``preset`` + ``seed``). The model section is a tagged union: ``model.name`` picks
the dataclass (``yolact``, ``sparseinst``, ``fastinst``), and the model's paper switches are
fields named as the paper names them.

Field metadata says how a value is checked and whether it is part of a run's identity:
``{"min": ...}`` is the smallest allowed value; ``metadata={"hash": False}`` (worker counts,
output folders) or ``HASHED_IF_SET`` do not change a run's identity; the identity itself,
the content hash that keys the run cache, is :func:`rtinst.records.config_hash` (it also
covers the weights a backbone starts from, which the model library knows, not the config).

Only the schema lives here, so that the model library and the engine read the sections they
need without the machinery that builds them from YAML and overrides (:mod:`rtinst.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union


def _min(value: float, **extra: Any) -> dict:
    return {"min": value, **extra}


NOT_HASHED = {"hash": False}
# Fields added after runs were recorded: left out of the hash while at their default, so the
# run cache keeps every earlier record (a set value does change the hash).
HASHED_IF_SET = {"hash": "if_set"}

# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------

BackboneName = Literal["resnet50", "resnet101", "tiny"]


@dataclass
class BackboneConfig:
    """ResNet trunk returning C3-C5 (strides 8/16/32), or the small `tiny` preset backbone."""

    name: BackboneName = "resnet50"
    resnet_d: bool = False  # ResNet-d: deep stem + avg-pool shortcut downsampling ("R50-d")
    dcn_stages: list[int] = field(default_factory=list)  # stages (2..5) with deformable 3x3 convs
    # DCNv2 (modulated, the default runs were costed with) or DCNv1 (false): the official
    # R50-d-DCN models use DCNv1 on stages 4-5 (detectron2's DEFORM_MODULATED=False).
    dcn_modulated: bool = field(default=True, metadata=HASHED_IF_SET)
    frozen_bn: bool = True
    # detectron2's FREEZE_AT: the convolutions of the first stages (1 stem, 2 +res2, ... 5
    # every stage) keep their initial weights; their BatchNorm follows frozen_bn. 0 trains all.
    freeze_at: int = field(default=0, metadata=_min(0, **HASHED_IF_SET))
    # "auto": ImageNet weights from the torch / Hugging Face cache when present (torchvision's
    # ResNet, timm's ResNet-d), else from scratch with a warning (an error at the coco
    # preset); a path: that file; "none": from scratch.
    pretrained: str = "auto"


@dataclass
class YolactConfig:
    """YOLACT (Bolya et al., ICCV 2019). Switches: Table 2a (nms), 2b (num_prototypes), 2c (mask_type)."""

    name: Literal["yolact"] = "yolact"
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="resnet101"))
    # BatchNorm in training (rtinst.models.batchnorm): "official" freezes it when a process
    # holds fewer than 6 images, as dbolya/yolact's train.py; "train" (plain BN, the tiny
    # records), "frozen" (always) or "sync" (SyncBatchNorm over processes, CUDA).
    batch_norm: Literal["train", "frozen", "official", "sync"] = field(default="train",
                                                                      metadata=HASHED_IF_SET)
    num_classes: int = field(default=80, metadata=_min(1))
    image_size: int = field(default=550, metadata=_min(32))  # square, aspect ratio not kept
    fpn_channels: int = field(default=256, metadata=_min(1))
    num_prototypes: int = field(default=32, metadata=_min(1))  # k
    mask_type: Literal["prototypes", "fc"] = "prototypes"  # "fc": fc-mask baseline of Table 2c
    fc_mask_size: int = field(default=16, metadata=_min(1))
    aspect_ratios: list[float] = field(default_factory=lambda: [1.0, 0.5, 2.0])
    anchor_scales: list[float] = field(default_factory=lambda: [24.0, 48.0, 96.0, 192.0, 384.0])
    # Anchor scales are in pixels at this size and scaled to image_size (s_x = s_550/550 * x).
    anchor_reference_size: int = field(default=550, metadata=_min(1))
    # Official code's "backward compatibility with a bug": square anchors of side
    # s*sqrt(a) per aspect ratio a (still 3 per location). False: the paper's w/h = a.
    square_anchors: bool = False
    box_variances: list[float] = field(default_factory=lambda: [0.1, 0.2], metadata=_min(0.0))  # SSD
    masks_to_train: int = field(default=100, metadata=_min(1))  # positives per image with a mask loss
    mask_threshold: float = field(default=0.5, metadata=_min(0.0))
    semantic_seg_loss: bool = True
    positive_iou: float = field(default=0.5, metadata=_min(0.0))
    negative_iou: float = field(default=0.4, metadata=_min(0.0))
    # Non-positive anchors whose area lies more than this fraction inside a crowd box are
    # neutral (official match(): intersection / anchor area > threshold); >= 1: off, the
    # official configs' value. Needs data.keep_crowd.
    crowd_iou_threshold: float = field(default=1.0, metadata=_min(0.0, **HASHED_IF_SET))
    ohem_negpos_ratio: float = field(default=3.0, metadata=_min(0.0))
    conf_loss_weight: float = field(default=1.0, metadata=_min(0.0))
    box_loss_weight: float = field(default=1.5, metadata=_min(0.0))
    mask_loss_weight: float = field(default=6.125, metadata=_min(0.0))
    semantic_loss_weight: float = field(default=1.0, metadata=_min(0.0))
    nms: Literal["fast", "standard", "cluster", "matrix"] = "fast"
    nms_iou_threshold: float = field(default=0.5, metadata=_min(0.0))
    nms_top_k: int = field(default=200, metadata=_min(1))
    # Fast NMS: true = the paper, every (anchor, class) pair needs score > score_threshold (the
    # committed tiny runs); false = the released code's default second_threshold=False: the
    # threshold keeps anchors (max class score), each then ranks in every class's top-k.
    second_threshold: bool = field(default=True, metadata=HASHED_IF_SET)
    score_threshold: float = field(default=0.05, metadata=_min(0.0))
    max_detections: int = field(default=100, metadata=_min(1))


@dataclass
class SparseInstConfig:
    """SparseInst (Cheng et al., CVPR 2022). Switches: Tables 1-7 of the paper."""

    name: Literal["sparseinst"] = "sparseinst"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = field(default=80, metadata=_min(1))
    # Instance context encoder (Table 2)
    encoder_ppm: bool = True
    encoder_fusion: bool = True
    encoder_channels: int = field(default=256, metadata=_min(1))
    # Decoder structure (Table 3)
    decoder_depth: int = field(default=4, metadata=_min(1))
    decoder_width: int = field(default=256, metadata=_min(1))
    coord_features: bool = True
    deform_last_conv: bool = False
    # F_iam (Table 4) / cross-attention alternative (Table 7)
    instance_head: Literal["iam", "cross_attention"] = "iam"
    iam_conv: Literal["1x1", "3x3", "3x3-relu-3x3"] = "3x3"
    iam_activation: Literal["sigmoid", "softmax"] = "sigmoid"
    iam_groups: int = field(default=4, metadata=_min(1))  # G; 1 = plain IAM, 4 = Group-IAM
    cross_attention_heads: int = field(default=4, metadata=_min(1))
    num_masks: int = field(default=100, metadata=_min(1))  # N instances / queries
    kernel_dim: int = field(default=128, metadata=_min(1))
    # Mask loss (Table 5): any weighted combination
    dice_weight: float = field(default=2.0, metadata=_min(0.0))
    bce_weight: float = field(default=5.0, metadata=_min(0.0))  # official code 5; paper text 2
    focal_mask_weight: float = field(default=0.0, metadata=_min(0.0))
    class_weight: float = field(default=2.0, metadata=_min(0.0))
    # IoU-aware objectness (Table 6)
    objectness: Literal["off", "no_rescore", "rescore"] = "rescore"
    objectness_loss: Literal["ce", "l1"] = "ce"
    objectness_weight: float = field(default=1.0, metadata=_min(0.0))
    matcher_alpha: float = field(default=0.8, metadata=_min(0.0))
    score_threshold: float = field(default=0.005, metadata=_min(0.0))
    mask_threshold: float = field(default=0.45, metadata=_min(0.0))
    # Official-code inference step, independent of Table 6's "rescore" (= sqrt(p * s)):
    # score *= mean mask probability inside the mask (prob > mask_threshold).
    mask_rescore: bool = True
    max_detections: int = field(default=100, metadata=_min(1))


@dataclass
class FastInstConfig:
    """FastInst (He et al., CVPR 2023). Switches: Tables 1-7 of the paper."""

    name: Literal["fastinst"] = "fastinst"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = field(default=80, metadata=_min(1))
    hidden_dim: int = field(default=256, metadata=_min(1))
    ffn_dim: int = field(default=1024, metadata=_min(1))
    num_heads: int = field(default=8, metadata=_min(1))
    # Pixel decoder (Table 5)
    pixel_decoder: Literal["fpn", "ppm_fpn", "transformer_encoder", "msdeformattn"] = "ppm_fpn"
    pixel_decoder_layers: int = field(default=6, metadata=_min(1))  # for the attention encoders
    # Revision 2: the (PPM-)FPN top-down path passes each output conv's result down
    # (bilinear) and laterals have GroupNorm without ReLU, as the official code. Revision 1
    # (the records trained before, whose configs lack this key) passed the pre-output sum
    # down, leaving E5's output conv without gradient. Always hashed, so no revision-1 record
    # matches a current config; there is no other value.
    pixel_decoder_revision: Literal[2] = 2
    # Queries (Tables 2, 6b-6e)
    query_type: Literal["zero", "learnable", "resize", "ia_guided"] = "ia_guided"
    num_ia_queries: int = field(default=100, metadata=_min(1))  # N_a
    num_aux_queries: int = field(default=8, metadata=_min(0))  # N_b
    query_source: Literal["E3", "E4", "E5"] = "E4"
    # Decoder (Tables 3, 6a, 7)
    decoder_layers: int = field(default=3, metadata=_min(0))  # D
    dual_path: Literal["pixel_then_query", "query_then_pixel", "pixel_only", "query_only"] = (
        "pixel_then_query"
    )
    pos_embedding: Literal["learnable", "sinusoidal"] = "learnable"
    # Training (Tables 4, 6f)
    gt_mask_guidance: bool = True
    ia_loss_matching: bool = True  # False: per-pixel semantic targets
    ia_loss_location_cost: bool = True
    # No-object weight of the matched IA-loss cross-entropy: "paper" 1/T (T = positions of the
    # source level, §3.6), "official" 1 (the released criterion's plain cross-entropy).
    ia_loss_no_object_weight: Literal["paper", "official"] = field(default="paper",
                                                                   metadata=HASHED_IF_SET)
    class_weight: float = field(default=2.0, metadata=_min(0.0))
    mask_weight: float = field(default=5.0, metadata=_min(0.0))
    dice_weight: float = field(default=5.0, metadata=_min(0.0))
    proposal_weight: float = field(default=20.0, metadata=_min(0.0))
    location_weight: float = field(default=1000.0, metadata=_min(0.0))
    no_object_weight: float = field(default=0.1, metadata=_min(0.0))
    num_points: int = field(default=12544, metadata=_min(1))
    oversample_ratio: float = field(default=3.0, metadata=_min(1.0))
    importance_sample_ratio: float = field(default=0.75, metadata=_min(0.0))
    max_detections: int = field(default=100, metadata=_min(1))


ModelConfig = Union[YolactConfig, SparseInstConfig, FastInstConfig]
MODEL_CONFIGS: dict[str, type] = {
    "yolact": YolactConfig,
    "sparseinst": SparseInstConfig,
    "fastinst": FastInstConfig,
}


@dataclass
class DataConfig:
    """Dataset paths (relative to ``root``), the train/test resizing and training augmentations."""

    # "synthetic": the embedded dataset, generated on first use under `root`.
    dataset: Literal["synthetic", "coco"] = "synthetic"
    root: str = "data/synthetic"
    train_ann: str = "annotations/instances_train.json"
    train_images: str = "train"
    val_ann: str = "annotations/instances_val.json"
    val_images: str = "val"
    synthetic_train: int = field(default=2000, metadata=_min(0))
    synthetic_val: int = field(default=500, metadata=_min(0))
    synthetic_seed: int = 0
    synthetic_size: int = field(default=320, metadata=_min(32))
    # Level of rtinst.data.difficulty (hard: the embedded dataset) and knobs replacing parts of
    # it, e.g. {objects: [1, 3], occlusion: false}; checked by its config_difficulty.
    synthetic_difficulty: str = field(default="hard", metadata=HASHED_IF_SET)
    synthetic_knobs: dict[str, Any] = field(default_factory=dict, metadata=HASHED_IF_SET)
    # Short-edge scale jitter and long-edge cap (FastInst/SparseInst: 416-640 / 853).
    # Two values: uniform integer range [min, max]; one or more than two: choices.
    train_short_edge: list[int] = field(default_factory=lambda: [416, 640], metadata=_min(1))
    train_max_size: int = field(default=853, metadata=_min(1))
    test_short_edge: int = field(default=640, metadata=_min(1))
    test_max_size: int = field(default=853, metadata=_min(1))
    # YOLACT resizes to a fixed square, ignoring aspect ratio; null keeps aspect ratio.
    fixed_size: Optional[int] = field(default=None, metadata=_min(1))
    hflip_prob: float = field(default=0.5, metadata=_min(0.0))
    # FastInst / SparseInst (_aug rows) crop branch, taken with probability crop_prob before
    # the resize above: short edge resized to a choice of crop_short_edge (no long-edge cap),
    # then an absolute-range crop, each side in [min(side, lo), min(side, hi)] pixels.
    crop_prob: float = field(default=0.0, metadata=_min(0.0, **HASHED_IF_SET))
    crop_short_edge: list[int] = field(default_factory=lambda: [400, 500, 600],
                                       metadata=_min(1, **HASHED_IF_SET))
    crop_size: list[int] = field(default_factory=lambda: [384, 600], metadata=_min(1, **HASHED_IF_SET))
    # YOLACT's SSDAugmentation before the resize (rtinst/data/augment.py): photometric
    # distortion, expand (zoom-out up to 4x onto the mean), SSD random sample crop whose
    # options are minimum IoUs (>= 1: no crop, 0: unconstrained).
    photometric_distort: bool = field(default=False, metadata=HASHED_IF_SET)
    expand: bool = field(default=False, metadata=HASHED_IF_SET)
    random_sample_crop: bool = field(default=False, metadata=HASHED_IF_SET)
    sample_crop_min_iou: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.3, 0.7, 0.9, 0.0],
                                             metadata=_min(0.0, **HASHED_IF_SET))
    # After the resize: drop training instances whose box is narrower or lower than this
    # many pixels (values below 1 drop nothing: boxes come from masks, >= 1 pixel).
    min_box_size: float = field(default=0.0, metadata=_min(0.0, **HASHED_IF_SET))
    # Training targets carry crowd regions as `crowd_boxes` (YOLACT's matching makes anchors
    # on them neutral, model.crowd_iou_threshold); False drops them when loading.
    keep_crowd: bool = field(default=False, metadata=HASHED_IF_SET)
    size_divisibility: int = field(default=32, metadata=_min(1))
    num_workers: int = field(default=2, metadata=_min(0, hash=False))


@dataclass
class TrainConfig:
    """Solver and schedule. ``steps`` < 1 are fractions of ``max_iters``."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = field(default=1e-4, metadata=_min(0.0))
    momentum: float = field(default=0.9, metadata=_min(0.0))
    weight_decay: float = field(default=0.05, metadata=_min(0.0))
    # detectron2's WEIGHT_DECAY_NORM / WEIGHT_DECAY_EMBED: weight decay of norm layers' weights
    # and biases / of nn.Embedding tables; null = weight_decay (as the committed tiny runs).
    # Official: 0 and 0 in FastInst, 0 on norms in SparseInst, null in YOLACT (coco presets).
    weight_decay_norm: Optional[float] = field(default=None, metadata=_min(0.0, **HASHED_IF_SET))
    weight_decay_embed: Optional[float] = field(default=None, metadata=_min(0.0, **HASHED_IF_SET))
    backbone_lr_mult: float = field(default=0.1, metadata=_min(0.0))
    # More per-module multipliers of lr, by parameter-name prefix (a module path), e.g.
    # {decoder.inst_branch.iam_conv: 10}; the longest matching prefix wins over
    # backbone_lr_mult. A prefix that names no parameter is an error.
    lr_mults: dict[str, float] = field(default_factory=dict, metadata=_min(0.0, **HASHED_IF_SET))
    batch_size: int = field(default=16, metadata=_min(1))
    max_iters: int = field(default=90000, metadata=_min(1))
    # Wall-clock budget: stop training after this many minutes (tiny preset on CPU).
    max_minutes: Optional[float] = field(default=None, metadata=_min(0.0))
    warmup_iters: int = field(default=1000, metadata=_min(0))
    warmup_factor: float = field(default=0.001, metadata=_min(0.0))
    steps: list[float] = field(default_factory=lambda: [0.9, 0.95])
    gamma: float = field(default=0.1, metadata=_min(0.0))
    clip_grad_norm: Optional[float] = field(default=None, metadata=_min(0.0))
    amp: bool = True  # CUDA only; ignored on CPU
    checkpoint_period: int = field(default=1000, metadata=_min(1, hash=False))
    log_period: int = field(default=20, metadata=_min(1, hash=False))
    # Save the weights after these many minutes / iterations of training; each snapshot is
    # evaluated at the end of the run, giving the AP-vs-minutes curve (curve.json) of a tiny
    # run. Iteration snapshots give the same curve points whatever the machine's load.
    snapshot_minutes: list[float] = field(default_factory=list, metadata=NOT_HASHED)
    snapshot_iters: list[int] = field(default_factory=list, metadata=NOT_HASHED)


def step_iterations(train: TrainConfig) -> list[int]:
    """Decay iterations of ``train.steps``; values < 1 are fractions of ``max_iters``."""
    return sorted(int(round(s * train.max_iters)) if s < 1 else int(s) for s in train.steps)


@dataclass
class EvalConfig:
    backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval"
    tide: bool = True
    max_images: Optional[int] = field(default=None, metadata=_min(1))


@dataclass
class RunConfig:
    """Everything that defines one run. Its hash keys the run cache."""

    model: ModelConfig = field(default_factory=SparseInstConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preset: str = "custom"  # smoke | tiny | coco | custom: labels every number's scale
    seed: int = 0
    device: str = field(default="auto", metadata=NOT_HASHED)  # auto | cpu | cuda[:N]
    output_dir: str = field(default="results/runs", metadata=NOT_HASHED)
