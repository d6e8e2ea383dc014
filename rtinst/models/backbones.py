"""Backbones returning C3-C5 (strides 8, 16, 32) as ``{"res3", "res4", "res5"}``.

- ResNet-50/101 from torchvision (v1.5: stride in the 3x3 conv).
- ``resnet_d``: ResNet-d of "Bag of Tricks" (He et al. 2019), the "R50-d" of SparseInst and
  FastInst: a deep stem of three 3x3 convs (32, 32, 64 channels) instead of the 7x7 conv,
  and shortcut downsampling by 2x2 average pooling followed by a stride-1 1x1 conv.
- ``dcn_stages``: the 3x3 conv of every bottleneck in those stages (2..5) becomes a
  modulated deformable conv (DCNv2, the "-DCN" of the papers) via
  ``torchvision.ops.deform_conv2d``; offsets and masks start at zero / 0.5 so that a fresh
  DCN behaves like its plain conv.
- ``frozen_bn``: torchvision's ``FrozenBatchNorm2d`` (the papers train with frozen BN).
- ImageNet weights: ``pretrained="auto"`` uses torchvision's cached file when it is present
  and otherwise trains from scratch with a message; a path loads that file;
  ``"none"`` is from scratch. Nothing is ever downloaded.
- ``tiny``: a small, fast ResNet (BasicBlocks, 32..256 channels) for the CPU ``tiny``
  preset, initialized from rtinst's committed pretrained weights when present.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops import deform_conv2d
from torchvision.ops.misc import FrozenBatchNorm2d

from rtinst.config import BackboneConfig
from rtinst.errors import UserError

STAGE_NAMES = ("res3", "res4", "res5")
TINY_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "tiny_backbone.pt"


class ModulatedDeformConv2d(nn.Module):
    """DCNv2: a 3x3 conv sampling at learned offsets, each sample weighted by a learned mask."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 kernel_size: int = 3):
        super().__init__()
        self.stride, self.dilation = stride, dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=1)
        # 2 offsets + 1 mask logit per kernel position, predicted from the input.
        self.offset_mask = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size,
                                     stride, self.padding, dilation)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.offset_mask(x)
        k = om.shape[1] // 3
        offset, mask = om[:, : 2 * k], om[:, 2 * k:].sigmoid()
        return deform_conv2d(x, offset, self.weight, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


def _deep_stem(norm: type[nn.Module]) -> nn.Sequential:
    def conv_bn(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(*conv_bn(3, 32, 2), *conv_bn(32, 32, 1), *conv_bn(32, 64, 1))


def _avgpool_downsample(block: nn.Module, norm: type[nn.Module]) -> None:
    """ResNet-d shortcut: 2x2 avg-pool then a stride-1 1x1 conv, instead of a stride-2 1x1 conv."""
    conv = block.downsample[0]
    if conv.stride == (1, 1):
        return
    block.downsample = nn.Sequential(
        nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(conv.in_channels, conv.out_channels, 1, 1, bias=False),
        norm(conv.out_channels),
    )


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk up to layer4, returning res3/res4/res5."""

    def __init__(self, depth: int = 50, resnet_d: bool = False, dcn_stages: tuple[int, ...] = (),
                 frozen_bn: bool = True):
        super().__init__()
        builders = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in builders:
            raise UserError(f"model.backbone: ResNet depth {depth} not supported; use 50 or 101")
        bad = sorted(set(dcn_stages) - {2, 3, 4, 5})
        if bad:
            raise UserError(f"model.backbone.dcn_stages: invalid stages {bad}; allowed 2, 3, 4, 5")
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        net = builders[depth](weights=None, norm_layer=norm)
        if resnet_d:
            self.stem = nn.Sequential(_deep_stem(norm), net.maxpool)
        else:
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.res2, self.res3, self.res4, self.res5 = net.layer1, net.layer2, net.layer3, net.layer4
        for stage_index, stage in zip((2, 3, 4, 5), (self.res2, self.res3, self.res4, self.res5)):
            for block in stage:
                if resnet_d and block.downsample is not None:
                    _avgpool_downsample(block, norm)
                if stage_index in dcn_stages:
                    c = block.conv2
                    block.conv2 = ModulatedDeformConv2d(c.in_channels, c.out_channels,
                                                        c.stride[0], c.dilation[0])
        self.out_channels = {"res3": 512, "res4": 1024, "res5": 2048}
        self.strides = {"res3": 8, "res4": 16, "res5": 32}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c2 = self.res2(self.stem(x))
        c3 = self.res3(c2)
        c4 = self.res4(c3)
        return {"res3": c3, "res4": c4, "res5": self.res5(c4)}


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyBackbone(nn.Module):
    """A small ResNet for CPU training: stem /4, then one BasicBlock stage per stride 4..32."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), frozen_bn: bool = False):
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        w2, w3, w4, w5 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w2 // 2, 3, 2, 1, bias=False), norm(w2 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(w2 // 2, w2, 3, 2, 1, bias=False), norm(w2), nn.ReLU(inplace=True),
        )
        self.res2 = _BasicBlock(w2, w2, 1, norm)
        self.res3 = _BasicBlock(w2, w3, 2, norm)
        self.res4 = _BasicBlock(w3, w4, 2, norm)
        self.res5 = _BasicBlock(w4, w5, 2, norm)
        self.out_channels = {"res3": w3, "res4": w4, "res5": w5}
        self.strides = {"res3": 8, "res4": 16, "res5": 32}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.res3(self.res2(self.stem(x)))
        c4 = self.res4(c3)
        return {"res3": c3, "res4": c4, "res5": self.res5(c4)}


def torchvision_cache_file(depth: int) -> Path:
    """Where torchvision keeps the ImageNet (IMAGENET1K_V1) weights of ResNet-``depth``."""
    weights = {50: torchvision.models.ResNet50_Weights, 101: torchvision.models.ResNet101_Weights}
    filename = Path(weights[depth].IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a state dict (plain or torchvision's, with ``conv1``/``layer1`` names) into ``backbone``.

    Returns the missing and unexpected keys; classifier (``fc``) keys are dropped silently.
    ResNet-d's deep stem / avg-pool shortcuts have no ImageNet counterpart in torchvision's
    weights, so those layers stay randomly initialized (listed as missing).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: backbone weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code, ...
        raise UserError(f"{path}: cannot load backbone weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1.", "layer1.": "res2.", "layer2.": "res3.",
              "layer3.": "res4.", "layer4.": "res5."}
    mapped = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        for old, new in rename.items():
            if key.startswith(old) and not any(key.startswith(n) for n in rename.values()):
                key = new + key[len(old):]
                break
        mapped[key] = value
    own = backbone.state_dict()
    shape_mismatch = [k for k, v in mapped.items() if k in own and own[k].shape != v.shape]
    for k in shape_mismatch:  # e.g. a 7x7 stem conv into ResNet-d's deep stem
        mapped.pop(k)
    result = backbone.load_state_dict(mapped, strict=False)
    if not set(own) & set(mapped):
        raise UserError(f"{path}: no parameter matches this backbone; wrong weights file?")
    return {"missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys) + shape_mismatch}


def resolve_pretrained(cfg: BackboneConfig) -> Path | None:
    """The weights file ``cfg.pretrained`` means here (None: from scratch). For ``auto`` the
    file may not exist (then the backbone trains from scratch, with a warning)."""
    if cfg.pretrained == "none":
        return None
    if cfg.pretrained != "auto":
        return Path(cfg.pretrained)
    if cfg.name == "tiny":
        return TINY_WEIGHTS
    return torchvision_cache_file(int(cfg.name.removeprefix("resnet")))


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def backbone_init_identity(cfg: BackboneConfig) -> str:
    """What a backbone starts from: "scratch" or the sha256 prefix of the weights file that
    ``pretrained`` resolves to on this machine. Part of the config hash, so that replacing
    the committed tiny weights (or adding ImageNet weights to the cache) gives new runs
    instead of silently reusing runs trained from other weights."""
    path = resolve_pretrained(cfg)
    if path is None or not path.is_file():
        return "scratch"
    st = path.stat()
    return _file_sha256(str(path), st.st_mtime_ns, st.st_size)


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """Construct the backbone of ``cfg`` and load its initialization (see module docstring)."""
    if cfg.name == "tiny":
        backbone: nn.Module = TinyBackbone(frozen_bn=cfg.frozen_bn)
    else:
        depth = int(cfg.name.removeprefix("resnet"))
        backbone = ResNetBackbone(depth, cfg.resnet_d, tuple(cfg.dcn_stages), cfg.frozen_bn)
    backbone.init_source = "scratch"  # recorded in run records
    path = resolve_pretrained(cfg)
    if path is None:
        return backbone
    if cfg.pretrained == "auto" and not path.is_file():
        warnings.warn(f"model.backbone.pretrained=auto: no weights at {path}; training "
                      f"{cfg.name} from scratch (set a path, or 'none' to silence this)",
                      stacklevel=2)
        return backbone
    load_weights(backbone, path)
    backbone.init_source = str(path)
    return backbone
