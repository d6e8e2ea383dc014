"""Backbones returning C3-C5 (strides 8, 16, 32) as ``{"res3", "res4", "res5"}``.

- ResNet-50/101 from torchvision (v1.5: stride in the 3x3 conv).
- ``resnet_d``: ResNet-d of "Bag of Tricks" (He et al. 2019), the "R50-d" of SparseInst and
  FastInst, laid out as timm's ``resnet50d`` (so its ImageNet file loads key for key): a
  deep stem of three 3x3 convs (32, 32, 64 channels) instead of the 7x7 conv, and shortcut
  downsampling by 2x2 average pooling followed by a stride-1 1x1 conv.
- ``dcn_stages``: the 3x3 conv of every bottleneck in those stages (2..5 = res2..res5, i.e.
  torchvision's layer1..layer4) becomes a deformable conv via
  ``torchvision.ops.deform_conv2d``: DCNv1 (offsets only) or, with ``dcn_modulated``, DCNv2
  (offsets and a sigmoid mask). The official R50-d-DCN models use DCNv1 on res4/res5
  (detectron2's ``DEFORM_ON_PER_STAGE=[F, F, T, T]``, ``DEFORM_MODULATED=False``). The
  offset predictors start at zero (mask 0.5), so a fresh DCN behaves like its plain conv
  (x0.5 for DCNv2), and they have no ImageNet counterpart.
- ``frozen_bn``: torchvision's ``FrozenBatchNorm2d`` (the papers train with frozen BN).
- ImageNet weights: ``pretrained="auto"`` looks for the file the official code starts from:
  torchvision's ``resnet50/101`` checkpoint, or for ResNet-d timm's ``resnet50d/101d``
  (in torch's hub cache under its release name, or in the Hugging Face cache where
  ``timm.create_model(..., pretrained=True)`` puts it). When it is absent the backbone
  trains from scratch with a warning, except at the ``coco`` preset where
  :func:`check_pretrained` makes that an error before any work. A path loads that file;
  ``"none"`` is from scratch. Nothing is ever downloaded. Loading is strict: every trunk
  parameter must come from the file (only DCN offset predictors may be absent).
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

from rtinst.config_schema import BackboneConfig
from rtinst.errors import UserError

STAGE_NAMES = ("res3", "res4", "res5")
TINY_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "tiny_backbone.pt"


# ImageNet checkpoints of timm's ResNet-d (the files SparseInst and FastInst start from), by
# depth: (release file name in torch's hub cache, Hugging Face repo of timm >= 0.9).
TIMM_RESNET_D = {50: ("resnet50d_ra2-464e36ba.pth", "timm/resnet50d.ra2_in1k"),
                 101: ("resnet101d_ra2-2803ffab.pth", "timm/resnet101d.ra2_in1k")}


class WeightsMismatchError(UserError):
    """A backbone weights file does not fit the configured backbone."""


class MissingWeightsError(UserError):
    """``pretrained`` names weights that are not on this machine."""


class DeformConv2d(nn.Module):
    """A 3x3 conv sampling at learned offsets: DCNv1 (Dai et al. 2017) or, ``modulated``,
    DCNv2 (Zhu et al. 2019), where each sample is also weighted by a learned mask."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 kernel_size: int = 3, modulated: bool = True):
        super().__init__()
        self.stride, self.dilation, self.modulated = stride, dilation, modulated
        self.padding = dilation * (kernel_size - 1) // 2
        # named like the conv it replaces, so ImageNet weights load into it
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=1)
        # 2 offsets (+ 1 mask logit for DCNv2) per kernel position, predicted from the input.
        per_position = 3 if modulated else 2
        self.conv_offset = nn.Conv2d(in_channels, per_position * kernel_size * kernel_size,
                                     kernel_size, stride, self.padding, dilation)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.conv_offset(x)
        mask = None
        if self.modulated:
            k = om.shape[1] // 3
            om, mask = om[:, : 2 * k], om[:, 2 * k:].sigmoid()
        return deform_conv2d(x, om, self.weight, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)


def _deep_stem_convs(norm: type[nn.Module]) -> nn.Sequential:
    """ResNet-d stem up to its last conv (timm's ``conv1``; its norm is ``bn1``)."""
    def conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)

    return nn.Sequential(conv(3, 32, 2), norm(32), nn.ReLU(inplace=True),
                         conv(32, 32, 1), norm(32), nn.ReLU(inplace=True), conv(32, 64, 1))


def _avgpool_downsample(block: nn.Module, norm: type[nn.Module]) -> None:
    """ResNet-d shortcut: 2x2 avg-pool then a stride-1 1x1 conv, instead of a stride-2 1x1
    conv (stride-1 shortcuts get an identity in the pool's place, as in timm)."""
    conv = block.downsample[0]
    pool = (nn.Identity() if conv.stride == (1, 1) else
            nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False))
    block.downsample = nn.Sequential(
        pool, nn.Conv2d(conv.in_channels, conv.out_channels, 1, 1, bias=False),
        norm(conv.out_channels))


FREEZE_STAGES = ("stem", "res2", "res3", "res4", "res5")  # model.backbone.freeze_at 1..5


class _Freezable(nn.Module):
    """``freeze_at`` k: the convolutions of the first k of :data:`FREEZE_STAGES` keep their
    weights (no gradient). Their BatchNorm layers follow ``frozen_bn`` as everywhere else:
    frozen with it (detectron2's FREEZE_AT, whose stages hold FrozenBatchNorm), trained
    (affine weights and statistics) without it."""

    def freeze(self, freeze_at: int) -> None:
        if not 0 <= freeze_at <= len(FREEZE_STAGES):
            raise UserError(f"model.backbone.freeze_at: 0..{len(FREEZE_STAGES)} "
                            f"(0 trains every stage), got {freeze_at}")
        for name in FREEZE_STAGES[:freeze_at]:
            for module in getattr(self, name).modules():
                if not isinstance(module, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
                    for p in module.parameters(recurse=False):
                        p.requires_grad_(False)


class ResNetBackbone(_Freezable):
    """torchvision ResNet trunk up to layer4, returning res3/res4/res5."""

    def __init__(self, depth: int = 50, resnet_d: bool = False, dcn_stages: tuple[int, ...] = (),
                 frozen_bn: bool = True, dcn_modulated: bool = True):
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
            self.stem = nn.Sequential(_deep_stem_convs(norm), norm(64), nn.ReLU(inplace=True),
                                      net.maxpool)
        else:
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.res2, self.res3, self.res4, self.res5 = net.layer1, net.layer2, net.layer3, net.layer4
        for stage_index, stage in zip((2, 3, 4, 5), (self.res2, self.res3, self.res4, self.res5)):
            for block in stage:
                if resnet_d and block.downsample is not None:
                    _avgpool_downsample(block, norm)
                if stage_index in dcn_stages:
                    c = block.conv2
                    block.conv2 = DeformConv2d(c.in_channels, c.out_channels, c.stride[0],
                                               c.dilation[0], modulated=dcn_modulated)
        self.depth, self.resnet_d = depth, resnet_d
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


class TinyBackbone(_Freezable):
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


def timm_resnet_d_files(depth: int) -> list[Path]:
    """Where timm's ImageNet ResNet-d (``resnet50d`` / ``resnet101d``) file may be, in order:
    torch's hub cache under the release name (the file the official configs name), then the
    Hugging Face cache (no network access: ``try_to_load_from_cache`` only reads the cache)."""
    filename, repo = TIMM_RESNET_D[depth]
    found = [Path(torch.hub.get_dir()) / "checkpoints" / filename]
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(repo, name)
        if isinstance(cached, str):
            found.append(Path(cached))
    return found


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingWeightsError(f"{path}: backbone weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code, ...
        raise UserError(f"{path}: cannot load backbone weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsMismatchError(f"{path}: not a state dict ({type(state).__name__})")
    return state


def _describe(backbone: nn.Module) -> str:
    if isinstance(backbone, TinyBackbone):
        return "the tiny backbone"
    return f"this ResNet{'-d' if backbone.resnet_d else ''}-{backbone.depth}"


def _sample(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f", ... ({len(keys)})" if len(keys) > 3 else "")


def load_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a state dict into ``backbone``, strictly: rtinst's own names, torchvision's
    (``conv1``/``bn1``/``layer1``..) or timm's (the same names; ResNet-d's deep stem is
    ``conv1.0..6`` + ``bn1``). Classifier (``fc``) keys and BN step counters are ignored;
    only DCN offset predictors may be absent from the file. Anything else that does not
    fit is a :class:`WeightsMismatchError` naming the file and the first offending keys.

    Returns ``{"missing": [...]}``: the DCN offset parameters left at their zero init.
    """
    path = Path(path)
    state = _read_state_dict(path)
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1.", "layer1.": "res2.", "layer2.": "res3.",
              "layer3.": "res4.", "layer4.": "res5."}
    mapped = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        for old, new in rename.items():
            if key.startswith(old) and not any(key.startswith(n) for n in rename.values()):
                key = new + key[len(old):]
                break
        mapped[key] = value
    own = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    offsets = sorted(k for k in own if ".conv_offset." in k)  # no ImageNet counterpart
    missing = sorted(set(own) - set(mapped) - set(offsets))
    unexpected = sorted(set(mapped) - set(own))
    shapes = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{len(x)} {what} ({_sample(x)})" for x, what in
                 ((missing, "missing"), (unexpected, "unexpected"), (shapes, "of another shape"))
                 if x]
        hint = ("" if isinstance(backbone, TinyBackbone) else
                "; ResNet-d needs timm's resnet50d/101d file, a plain ResNet torchvision's")
        raise WeightsMismatchError(f"{path}: does not fit {_describe(backbone)}: "
                                   f"{', '.join(parts)} parameter keys{hint}")
    backbone.load_state_dict(mapped, strict=False)
    return {"missing": offsets}


def resolve_pretrained(cfg: BackboneConfig) -> Path | None:
    """The weights file ``cfg.pretrained`` means here (None: from scratch). For ``auto`` the
    file may not exist (see :func:`check_pretrained`); then it is the first place looked at."""
    if cfg.pretrained == "none":
        return None
    if cfg.pretrained != "auto":
        return Path(cfg.pretrained)
    if cfg.name == "tiny":
        return TINY_WEIGHTS
    depth = int(cfg.name.removeprefix("resnet"))
    if cfg.resnet_d:
        candidates = timm_resnet_d_files(depth)
        return next((p for p in candidates if p.is_file()), candidates[0])
    return torchvision_cache_file(depth)


def check_pretrained(cfg: BackboneConfig, preset: str) -> None:
    """Fail before any work when the weights ``cfg.pretrained`` names are not here: a
    missing path always, and ``auto`` without ImageNet weights at the ``coco`` preset (the
    papers' models start from ImageNet; training one from scratch must be asked for)."""
    path = resolve_pretrained(cfg)
    if path is None or path.is_file():
        return
    if cfg.pretrained != "auto":
        raise MissingWeightsError(f"model.backbone.pretrained: {path}: backbone weights file not found")
    if preset != "coco":
        return
    what = (f"timm's resnet{cfg.name.removeprefix('resnet')}d" if cfg.resnet_d
            else f"torchvision's {cfg.name}")
    raise MissingWeightsError(
        f"model.backbone.pretrained=auto: no ImageNet weights ({what}) at {path}; put the file "
        f"there, set model.backbone.pretrained=PATH, or model.backbone.pretrained=none to "
        f"train from scratch on purpose")


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
        backbone = ResNetBackbone(depth, cfg.resnet_d, tuple(cfg.dcn_stages), cfg.frozen_bn,
                                  cfg.dcn_modulated)
    backbone.init_source = "scratch"  # recorded in run records
    path = resolve_pretrained(cfg)
    if cfg.pretrained == "auto" and path is not None and not path.is_file():
        warnings.warn(f"model.backbone.pretrained=auto: no weights at {path}; training "
                      f"{cfg.name} from scratch (set a path, or 'none' to silence this)",
                      stacklevel=2)
    elif path is not None:
        load_weights(backbone, path)
        backbone.init_source = str(path)
    backbone.freeze(cfg.freeze_at)
    return backbone
