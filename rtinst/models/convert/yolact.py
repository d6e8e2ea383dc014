"""Official YOLACT (dbolya/yolact, ``yolact_base`` / ``yolact_resnet50``) -> rtinst ``Yolact``.

Beyond renames:

- ``fpn.lat_layers.i`` / ``pred_layers.i`` run coarse to fine (0 = C5/P5): index ``2 - i``.
- ``proto_net`` indices 0, 2, 4 (3x3 convs), 8 (the conv after the x2 upsample at 6) and 10
  (the 1x1 conv to k prototypes); ``prediction_layers.0`` is the head shared by P3-P7.
- Class, box and coefficient channels are anchor-major (channel = anchor * C + c) with the
  background class **first**, as rtinst's head: they map as they are.
- ``semantic_seg_conv`` (training only) maps onto rtinst's ``semantic`` conv.
- Input: the official network sees RGB normalised with mean (123.68, 116.78, 103.94) and
  std (58.40, 57.12, 57.38) (given in BGR order in ``data/config.py``; ``FastBaseTransform``
  flips BGR to RGB). rtinst normalises RGB with ImageNet's (123.675, 116.28, 103.53) /
  (58.395, 57.12, 57.375), so the stem conv is rescaled per input channel by
  ``std_rtinst / std_official`` (exact) and the mean difference is folded into the stem
  BN's running mean (exact except where the 7x7 conv's zero padding reaches the image
  border: there the official padding is 0 in its own normalisation).
- Anchors are not weights: the official code uses square anchors (``use_square_anchors``,
  a kept bug), which rtinst builds with ``-o model.square_anchors=true``.
"""

from __future__ import annotations

import torch

# the normalisation rtinst's data pipeline applies: the fold targets exactly that
from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rtinst.models.convert.common import Inferred, Rules, Source, State
from rtinst.models.convert.resnet import infer_backbone, yolact_rules

# The official network's input normalisation, in RGB order (data/config.py lists it as BGR).
OFFICIAL_MEAN = (123.68, 116.78, 103.94)
OFFICIAL_STD = (58.40, 57.12, 57.38)
PROTO_INDICES = {"convs.0": 0, "convs.1": 2, "convs.2": 4, "up_conv": 8, "out": 10}


def _scale() -> torch.Tensor:
    """Per input channel: official input = rtinst input * scale + shift."""
    return torch.tensor(IMAGENET_STD) / torch.tensor(OFFICIAL_STD)


def _shift() -> torch.Tensor:
    return (torch.tensor(IMAGENET_MEAN) - torch.tensor(OFFICIAL_MEAN)) / torch.tensor(OFFICIAL_STD)


def fold_stem_weight(w: torch.Tensor, _: State) -> torch.Tensor:
    return w * _scale().to(w.dtype).view(1, -1, 1, 1)


def fold_stem_mean(mean: torch.Tensor, state: State) -> torch.Tensor:
    """The official conv's response to the constant input shift, taken off the BN mean."""
    w = state["backbone.conv1.weight"]
    offset = (w * _shift().to(w.dtype).view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    return mean - offset.to(mean.dtype)


def rules(cfg) -> Rules:
    r = yolact_rules(Rules(),
                     Source("backbone.conv1.weight", fold_stem_weight,
                            "scaled per input channel by std_rtinst / std_official"),
                     Source("backbone.bn1.running_mean", fold_stem_mean,
                            "plus the stem conv's response to the mean difference"))
    r.add(r"fpn\.lateral\.(\d)\.(weight|bias)",
          lambda m: Source(f"fpn.lat_layers.{2 - int(m.group(1))}.{m.group(2)}"))
    r.add(r"fpn\.output\.(\d)\.(weight|bias)",
          lambda m: Source(f"fpn.pred_layers.{2 - int(m.group(1))}.{m.group(2)}"))
    r.add(r"fpn\.downsample\.(\d)\.(weight|bias)", r"fpn.downsample_layers.\1.\2")
    r.add(r"protonet\.(convs\.\d|up_conv|out)\.(weight|bias)",
          lambda m: Source(f"proto_net.{PROTO_INDICES[m.group(1)]}.{m.group(2)}")
          if m.group(1) in PROTO_INDICES else None)
    head = {"shared": "upfeature.0", "cls": "conf_layer", "box": "bbox_layer", "mask": "mask_layer"}
    r.add(r"head\.(shared|cls|box|mask)\.(weight|bias)",
          lambda m: Source(f"prediction_layers.0.{head[m.group(1)]}.{m.group(2)}"))
    r.add(r"semantic\.(weight|bias)", r"semantic_seg_conv.\1")
    return r


SIGNATURE = "prediction_layers."


def dropped(key: str) -> bool:
    # Yolact.load_weights' stale keys (backbone.layer*, extra downsample_layers) are refused
    return False


def infer(state: State) -> list[Inferred]:
    out = infer_backbone(state, "backbone.", "layers.2")
    shape = {k: tuple(v.shape) for k, v in state.items()}
    if (s := shape.get("fpn.lat_layers.0.weight")):
        out.append(Inferred("fpn_channels", s[0], f"{s[0]} FPN channels"))
    if (s := shape.get("proto_net.10.weight")):
        out.append(Inferred("num_prototypes", s[0], f"k = {s[0]} prototypes"))
        out.append(Inferred("mask_type", "prototypes", "a protonet"))
    box, conf = shape.get("prediction_layers.0.bbox_layer.weight"), shape.get(
        "prediction_layers.0.conf_layer.weight")
    if box and conf:
        anchors = box[0] // 4
        out.append(Inferred("num_classes", conf[0] // anchors - 1, f"{conf[0] // anchors - 1} classes"))
    out.append(Inferred("semantic_seg_loss", "semantic_seg_conv.weight" in state,
                        "a semantic segmentation conv" if "semantic_seg_conv.weight" in state
                        else "no semantic segmentation conv"))
    return out


def official_settings(cfg) -> list[str]:
    notes = []
    if not cfg.square_anchors:
        notes.append("the official anchors are square (use_square_anchors): evaluate with "
                     "-o model.square_anchors=true")
    if cfg.image_size != 550 or cfg.anchor_reference_size != 550:
        notes.append("the released models run at 550x550 (model.image_size=550, data.fixed_size=550)")
    return notes
