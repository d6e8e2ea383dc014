"""Official SparseInst (detectron2, ``sparse_inst_r50_{base,giam}``) -> rtinst ``SparseInst``.

Beyond renames:

- ``encoder.fpn_laterals.i`` / ``fpn_outputs.i`` run coarse to fine (0 = res5); rtinst's FPN
  lists levels fine to coarse (0 = res3): index ``2 - i``.
- The first conv of both decoder branches takes 258 channels; the official decoder puts the
  x, y coordinate channels **first**, rtinst appends them **after** the 256 features, so the
  two input channels move from the front to the back of the weight.
- Group-IAM's ``iam_conv`` (groups 4) and ``fc`` map as they are: both order instance maps
  as group-major (channel = g * N + n).
- Class logits are 80 sigmoid outputs in both (no background column); contiguous class i is
  the i-th COCO category id in increasing order in both, as ``CocoInstanceDataset`` does.
- Input: RGB 0..255 normalised by ImageNet mean/std, padded after normalisation: as rtinst.
"""

from __future__ import annotations

import torch

from rtinst.models.convert.common import Inferred, Rules, Source, State, count_indices
from rtinst.models.convert.resnet import detectron2_rules, infer_backbone


def coords_last(t: torch.Tensor, _: State) -> torch.Tensor:
    """(out, 2 + C, k, k) with x, y first -> (out, C + 2) with x, y last."""
    return torch.cat([t[:, 2:], t[:, :2]], dim=1)


def rules(cfg) -> Rules:
    r = detectron2_rules(Rules())
    r.add(r"encoder\.fpn\.laterals\.(\d)\.0\.(weight|bias)",
          lambda m: Source(f"encoder.fpn_laterals.{2 - int(m.group(1))}.{m.group(2)}"))
    r.add(r"encoder\.fpn\.outputs\.(\d)\.0\.(weight|bias)",
          lambda m: Source(f"encoder.fpn_outputs.{2 - int(m.group(1))}.{m.group(2)}"))
    r.add(r"encoder\.fpn\.top\.(.+)", r"encoder.ppm.\1")
    r.add(r"encoder\.fusion\.(weight|bias)", r"encoder.fusion.\1")
    for branch, official in (("inst_branch", "inst_convs"), ("mask_branch", "mask_convs")):
        if cfg.coord_features:
            r.add(rf"decoder\.{branch}\.convs\.0\.weight", f"decoder.{branch}.{official}.0.weight",
                  coords_last, "x, y input channels moved from first to last")
        r.add(rf"decoder\.{branch}\.convs\.(\d+)\.(weight|bias)", rf"decoder.{branch}.{official}.\1.\2")
    r.add(r"decoder\.inst_branch\.iam_conv\.(weight|bias)", r"decoder.inst_branch.iam_conv.\1")
    r.add(r"decoder\.inst_branch\.fc\.0\.(weight|bias)", r"decoder.inst_branch.fc.\1")
    r.add(r"decoder\.inst_branch\.heads\.(cls_score|mask_kernel|objectness)\.(weight|bias)",
          r"decoder.inst_branch.\1.\2")
    r.add(r"decoder\.mask_branch\.projection\.(weight|bias)", r"decoder.mask_branch.projection.\1")
    return r


SIGNATURE = "decoder.inst_branch."  # every official SparseInst checkpoint has these keys


def dropped(key: str) -> bool:
    return False  # every official SparseInst tensor is a weight rtinst uses


def infer(state: State) -> list[Inferred]:
    out = infer_backbone(state, "backbone.", "res4")
    shape = {k: tuple(v.shape) for k, v in state.items()}
    if (s := shape.get("decoder.inst_branch.cls_score.weight")):
        out.append(Inferred("num_classes", s[0], f"{s[0]} classes"))
    enc = shape.get("encoder.fpn_laterals.0.weight")
    if enc:
        out.append(Inferred("encoder_channels", enc[0], f"{enc[0]} encoder channels"))
    ppm, fusion = any(k.startswith("encoder.ppm.") for k in state), "encoder.fusion.weight" in state
    out.append(Inferred("encoder_ppm", ppm, "a PPM" if ppm else "no PPM"))
    out.append(Inferred("encoder_fusion", fusion, "multi-scale fusion" if fusion else "no fusion"))
    depth = count_indices(state, r"decoder\.inst_branch\.inst_convs\.(\d+)\.weight")
    if depth:
        out.append(Inferred("decoder_depth", depth, f"decoder depth {depth}"))
    first = shape.get("decoder.inst_branch.inst_convs.0.weight")
    if first and enc:
        out.append(Inferred("decoder_width", first[0], f"decoder width {first[0]}"))
        coords = first[1] - enc[0] == 2
        out.append(Inferred("coord_features", coords, "coordinate features" if coords
                            else "no coordinate features"))
    iam = shape.get("decoder.inst_branch.iam_conv.weight")
    if iam and first:
        groups = first[0] // iam[1] if "decoder.inst_branch.fc.weight" in state else 1
        out.append(Inferred("iam_groups", groups, f"Group-IAM with {groups} groups" if groups > 1
                            else "plain IAM (no group fc)"))
        out.append(Inferred("num_masks", iam[0] // groups, f"{iam[0] // groups} instance masks"))
        kind = {1: "1x1", 3: "3x3"}.get(iam[-1])
        if kind:
            out.append(Inferred("iam_conv", kind, f"a {kind} F_iam"))
    if (s := shape.get("decoder.inst_branch.mask_kernel.weight")):
        out.append(Inferred("kernel_dim", s[0], f"kernel dim {s[0]}"))
    out.append(Inferred("instance_head", "iam", "an IAM instance head"))
    out.append(Inferred("deform_last_conv", False, "no deformable decoder conv"))
    return out


def official_settings(cfg) -> list[str]:
    """What the release was evaluated with that the weights cannot tell."""
    notes = []
    if cfg.objectness != "rescore":
        notes.append("official inference rescores by objectness: -o model.objectness=rescore")
    if not cfg.mask_rescore:
        notes.append("official inference rescores by maskness: -o model.mask_rescore=true")
    return notes


__all__ = ["rules", "dropped", "infer", "official_settings", "coords_last"]
