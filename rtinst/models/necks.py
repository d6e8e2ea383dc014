"""Necks: FPN building blocks, the pyramid pooling module and SparseInst's context encoder.

Reusable pieces (FastInst's pixel decoders, whose top-down path differs, are in
``rtinst.models.pixel_decoders``):

- :func:`conv_norm_act`: a conv with optional GroupNorm / BatchNorm and ReLU.
- :class:`PPM`: pyramid pooling (Zhao et al., PSPNet): adaptive average pooling to 1, 2, 3
  and 6 cells, a 1x1 conv to ``C/4`` (64 for 256) channels and ReLU per branch, bilinear
  upsampling back, concatenation with the input and a 1x1 bottleneck conv + ReLU to ``C``.
- :class:`FPN`: feature pyramid (Lin et al.): a 1x1 lateral per level, nearest-neighbour
  top-down addition, a 3x3 output conv per level (or only for ``output_levels``); an
  optional ``top`` module (PPM) is applied to the coarsest lateral before the top-down pass.
- :class:`InstanceContextEncoder`: SparseInst §3.3 / Table 2. FPN on C3-C5 with PPM on the C5
  lateral (``ppm``), and multi-scale fusion (``fusion``): P3, P4, P5 bilinearly upsampled to
  1/8, concatenated (3C) and fused by a 1x1 conv to C. Both off = vanilla FPN's P3 (the
  P4/P5 output convs, unused by a single-level head, are then not built).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def init_xavier(conv: nn.Module) -> None:
    """Uniform fan-in init (kaiming_uniform, a=1) with zero bias, as detectron2's FPN convs."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)


def init_msra(conv: nn.Module) -> None:
    """He-normal (fan-out, ReLU) init with zero bias, for conv stacks followed by ReLU."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if getattr(conv, "bias", None) is not None:
        nn.init.zeros_(conv.bias)


def _norm(kind: Optional[str], channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "GN":
        return nn.GroupNorm(32 if channels % 32 == 0 else 1, channels)
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; use None, 'GN' or 'BN'")


def conv_norm_act(cin: int, cout: int, kernel_size: int, norm: Optional[str] = None,
                  activation: bool = False, stride: int = 1) -> nn.Sequential:
    """Conv (bias only without norm) -> optional norm -> optional ReLU; xavier-style init."""
    conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=norm is None)
    init_xavier(conv)
    layers: list[nn.Module] = [conv]
    if norm is not None:
        layers.append(_norm(norm, cout))
    if activation:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PPM(nn.Module):
    """Pyramid pooling module; output has the input's channel count and size."""

    def __init__(self, in_channels: int, channels: Optional[int] = None,
                 sizes: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        channels = channels or in_channels // 4
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(in_channels, channels, 1))
            for s in sizes)
        self.bottleneck = nn.Conv2d(in_channels + len(sizes) * channels, in_channels, 1)
        for m in [*(s[1] for s in self.stages), self.bottleneck]:
            init_xavier(m)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [F.interpolate(F.relu(stage(x)), size=size, mode="bilinear", align_corners=False)
                  for stage in self.stages]
        return F.relu(self.bottleneck(torch.cat([*priors, x], dim=1)))


class FPN(nn.Module):
    """Top-down feature pyramid over levels given fine to coarse; returns outputs fine to coarse."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, top: Optional[nn.Module] = None,
                 norm: Optional[str] = None, activation: bool = False,
                 output_levels: Optional[Sequence[int]] = None):
        super().__init__()
        self.laterals = nn.ModuleList(conv_norm_act(c, out_channels, 1, norm, activation)
                                      for c in in_channels)
        # Levels that get a 3x3 output conv (default all); the others return None, so a
        # single-level user does not build (or run) output convs whose result it drops.
        levels = range(len(in_channels)) if output_levels is None else output_levels
        self.output_levels = sorted(int(i) for i in levels)
        self.outputs = nn.ModuleDict({str(i): conv_norm_act(out_channels, out_channels, 3, norm,
                                                            activation)
                                      for i in self.output_levels})
        self.top = top if top is not None else nn.Identity()
        self.out_channels = out_channels

    def _output(self, i: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        return self.outputs[str(i)](x) if str(i) in self.outputs else None

    def forward(self, features: Sequence[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        last = len(features) - 1
        prev = self.top(self.laterals[last](features[last]))
        outs = [self._output(last, prev)]
        for i in range(last - 1, -1, -1):
            lat = self.laterals[i](features[i])
            prev = lat + F.interpolate(prev, size=lat.shape[-2:], mode="nearest")
            outs.insert(0, self._output(i, prev))
        return outs


class InstanceContextEncoder(nn.Module):
    """SparseInst's encoder: ``{"res3", "res4", "res5"}`` -> one 1/8 map with ``channels``."""

    IN_FEATURES = ("res3", "res4", "res5")

    def __init__(self, in_channels: dict[str, int], channels: int = 256, ppm: bool = True,
                 fusion: bool = True):
        super().__init__()
        top = PPM(channels) if ppm else None
        # Without fusion only P3 is used: P4/P5 output convs are not built.
        self.fpn = FPN([in_channels[k] for k in self.IN_FEATURES], channels, top=top,
                       output_levels=None if fusion else [0])
        self.fusion = nn.Conv2d(len(self.IN_FEATURES) * channels, channels, 1) if fusion else None
        if self.fusion is not None:
            init_xavier(self.fusion)
        self.use_ppm, self.use_fusion = ppm, fusion
        self.out_channels = channels

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = self.fpn([features[k] for k in self.IN_FEATURES])
        if self.fusion is None:
            return outs[0]
        size = outs[0].shape[-2:]
        ups = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False)
                           for o in outs[1:]]
        return self.fusion(torch.cat(ups, dim=1))
