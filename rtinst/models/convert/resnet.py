"""Backbone key maps: detectron2's ResNet (FastInst, SparseInst) and YOLACT's ResNet onto
rtinst's torchvision-layout ``ResNetBackbone`` (``stem.0``/``stem.1``, ``res2..res5``,
``conv1..3``/``bn1..3``, ``downsample.0/1``).

- detectron2: ``stem.conv1`` with its ``norm``; blocks ``res2..res5.N.{conv1,conv2,conv3,
  shortcut}``, each norm under the conv (``conv1.norm``). Its FrozenBN keeps weight, bias and
  running stats as buffers with no ``num_batches_tracked``: rtinst's frozen BN
  (torchvision's FrozenBatchNorm2d, same ``eps`` 1e-5 and formula) takes them as they are,
  so converting needs ``model.backbone.frozen_bn=true``.
- YOLACT: ``conv1``/``bn1`` and ``layers.{0..3}`` for res2..res5, torchvision's own names
  inside, trainable BatchNorm with ``num_batches_tracked``.
"""

from __future__ import annotations

import re

from rtinst.models.convert.common import Inferred, Rules, Source, State, count_indices

RESNET_DEPTHS = {6: "resnet50", 23: "resnet101"}  # blocks in res4 -> backbone name
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def detectron2_rules(rules: Rules) -> Rules:
    rules.add(r"backbone\.stem\.0\.weight", "backbone.stem.conv1.weight")
    rules.add(rf"backbone\.stem\.1\.{_BN}", r"backbone.stem.conv1.norm.\1")
    rules.add(r"backbone\.(res\d)\.(\d+)\.conv(\d)\.weight", r"backbone.\1.\2.conv\3.weight")
    rules.add(rf"backbone\.(res\d)\.(\d+)\.bn(\d)\.{_BN}", r"backbone.\1.\2.conv\3.norm.\4")
    rules.add(r"backbone\.(res\d)\.(\d+)\.downsample\.0\.weight", r"backbone.\1.\2.shortcut.weight")
    rules.add(rf"backbone\.(res\d)\.(\d+)\.downsample\.1\.{_BN}", r"backbone.\1.\2.shortcut.norm.\3")
    return rules


def yolact_rules(rules: Rules, stem_weight: Source, stem_running_mean: Source) -> Rules:
    """``stem_*``: the stem conv and BN mean, which also fold YOLACT's input normalisation."""
    rules.add(r"backbone\.stem\.0\.weight", lambda m: stem_weight)
    rules.add(r"backbone\.stem\.1\.running_mean", lambda m: stem_running_mean)
    rules.add(rf"backbone\.stem\.1\.{_BN}", r"backbone.bn1.\1")

    def stage(m: re.Match) -> Source:
        return Source(f"backbone.layers.{int(m.group(1)) - 2}.{m.group(2)}")

    rules.add(r"backbone\.res(\d)\.(.+)", stage)
    return rules


def infer_backbone(state: State, prefix: str, res4: str) -> list[Inferred]:
    """Backbone name (from res4's block count) and whether BN is frozen (no counters)."""
    out = []
    blocks = count_indices(state, rf"{re.escape(prefix)}{re.escape(res4)}\.(\d+)\..+")
    if blocks in RESNET_DEPTHS:
        name = RESNET_DEPTHS[blocks]
        out.append(Inferred("backbone.name", name, f"a {name} backbone"))
    frozen = not any(k.startswith(prefix) and k.endswith("num_batches_tracked") for k in state)
    out.append(Inferred("backbone.frozen_bn", frozen, "frozen BN" if frozen else "trainable BN"))
    out.append(Inferred("backbone.resnet_d", False, "a plain ResNet stem"))
    out.append(Inferred("backbone.dcn_stages", [], "no deformable convs"))
    return out


__all__ = ["detectron2_rules", "yolact_rules", "infer_backbone", "RESNET_DEPTHS"]
