"""YOLACT: Real-time Instance Segmentation (Bolya et al., ICCV 2019).

Architecture (paper Sec. 3-5, REFERENCE_FACTS):

- Backbone: ResNet-101 (50) C3-C5 (``build_backbone``); BN is *not* frozen in the paper
  (set ``model.backbone.frozen_bn: false``, as the presets do), but the official trainer
  freezes it when a GPU holds fewer than 6 images: ``model.batch_norm`` (train / frozen /
  official / sync, :mod:`rtinst.models.batchnorm`), applied by :meth:`Yolact.prepare_training`
  once the training loop knows the per-process batch.
- FPN (:class:`YolactFPN`): 1x1 lateral convs on C3-C5, top-down bilinear upsampling + sum,
  3x3 output convs (+ReLU) giving P3-P5; P6 and P7 are successive 3x3 stride-2 convs starting
  from P5 (no ReLU); no P2. 256 channels.
- Protonet (:class:`Protonet`) on P3: 3 x (3x3 conv 256 + ReLU), x2 bilinear upsample,
  3x3 conv 256 + ReLU, 1x1 conv to k prototypes, ReLU -> 1/4 of the input (138x138 at 550).
- Prediction head (:class:`PredictionHead`), shared by all levels: one 3x3 conv (256) + ReLU
  shared by the three branches, then one 3x3 conv per branch: class (a*(K+1)), box (a*4),
  coefficients (a*k, tanh), a = 3 anchors per location.
- fc-mask baseline (Table 2c, ``mask_type: fc``): no protonet; the mask branch predicts
  16x16 = 256 mask logits per anchor (the "fc" output of a one-stage head is its last conv),
  a box-relative mask pasted into the detection's box at test time.
- Semantic segmentation head: 1x1 conv on P3 with K outputs, training only.
- Anchors / box coding: ``rtinst.models.anchors``; losses: ``rtinst.models.yolact_loss``.

Inference (eval mode): softmax over K+1, drop the background column, decode boxes (clipped
to the input), NMS of ``cfg.nms`` (Fast NMS by default: score > 0.05, top 200 per class,
IoU 0.5, 100 detections; ``cfg.second_threshold=False``, the released code's default, thresholds
only each anchor's best class score) via ``rtinst.ops.nms.nms``, then masks = sigmoid(P C^T) of the
detections at prototype resolution, cropped by the predicted box (cells overlapping it).
The engine upsamples ``mask_probs`` to the padded input and thresholds at 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtinst.config_schema import YolactConfig
from rtinst.models.anchors import decode_boxes, generate_anchors, scaled_anchor_scales
from rtinst.models.backbones import build_backbone
from rtinst.models.batchnorm import (check_sync_batch_norm, freeze_batch_norm,
                                     resolve_batch_norm_mode, to_sync_batch_norm)
from rtinst.models.yolact_loss import YolactLoss, crop_region
from rtinst.ops import nms as nms_ops

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2)


class YolactFPN(nn.Module):
    """FPN on C3-C5 plus P6/P7 from stride-2 3x3 convs on P5 (RetinaNet-style, no P2)."""

    def __init__(self, in_channels: dict[str, int], channels: int = 256):
        super().__init__()
        names = ("res3", "res4", "res5")
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels[n], channels, 1) for n in names)
        self.output = nn.ModuleList(_conv(channels, channels) for _ in names)
        self.downsample = nn.ModuleList(_conv(channels, channels, 3, 2) for _ in range(2))

    def forward(self, feats: dict[str, Tensor]) -> list[Tensor]:
        c3, c4, c5 = feats["res3"], feats["res4"], feats["res5"]
        p5 = self.lateral[2](c5)
        p4 = self.lateral[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        p3 = self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        outs = [F.relu(conv(p)) for conv, p in zip(self.output, (p3, p4, p5))]
        p6 = self.downsample[0](outs[-1])
        p7 = self.downsample[1](p6)
        return outs + [p6, p7]


class Protonet(nn.Module):
    """P3 -> k prototypes at twice P3's resolution (Fig. 3), ReLU output."""

    def __init__(self, channels: int = 256, num_prototypes: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels, channels) for _ in range(3))
        self.up_conv = _conv(channels, channels)
        self.out = nn.Conv2d(channels, num_prototypes, 1)

    def forward(self, p3: Tensor) -> Tensor:
        x = p3
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.up_conv(x))
        return F.relu(self.out(x))


class PredictionHead(nn.Module):
    """Shared 3x3 conv + ReLU, then one 3x3 conv per branch (class, box, mask)."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, mask_dim: int,
                 tanh_mask: bool = True):
        super().__init__()
        self.num_anchors, self.num_classes, self.mask_dim = num_anchors, num_classes, mask_dim
        self.tanh_mask = tanh_mask
        self.shared = _conv(channels, channels)
        self.cls = _conv(channels, num_anchors * (num_classes + 1))
        self.box = _conv(channels, num_anchors * 4)
        self.mask = _conv(channels, num_anchors * mask_dim)

    @staticmethod
    def _flat(x: Tensor, dim: int) -> Tensor:
        # (B, a*dim, H, W) -> (B, H*W*a, dim): anchor order y, x, aspect ratio
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.relu(self.shared(x))
        cls = self._flat(self.cls(x), self.num_classes + 1)
        box = self._flat(self.box(x), 4)
        mask = self._flat(self.mask(x), self.mask_dim)
        return cls, box, torch.tanh(mask) if self.tanh_mask else mask


class Yolact(nn.Module):
    """YOLACT / fc-mask detector; see the module docstring and ``rtinst.models`` contract."""

    def __init__(self, cfg: YolactConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        ch = cfg.fpn_channels
        self.fpn = YolactFPN(self.backbone.out_channels, ch)
        self.fc_mask = cfg.mask_type == "fc"
        num_anchors = len(cfg.aspect_ratios)
        if len(cfg.anchor_scales) != len(LEVELS):
            raise ValueError(f"model.anchor_scales: need {len(LEVELS)} scales (P3-P7), "
                             f"got {len(cfg.anchor_scales)}")
        if self.fc_mask:
            self.protonet = None
            mask_dim = cfg.fc_mask_size ** 2
        else:
            self.protonet = Protonet(ch, cfg.num_prototypes)
            mask_dim = cfg.num_prototypes
        self.head = PredictionHead(ch, num_anchors, cfg.num_classes, mask_dim,
                                   tanh_mask=not self.fc_mask)
        # training-only semantic segmentation conv (not run at test time)
        self.semantic = nn.Conv2d(ch, cfg.num_classes, 1) if cfg.semantic_seg_loss else None
        self.loss = YolactLoss(cfg)
        self._anchor_cache: dict = {}
        self._init_weights()
        self.batch_norm_mode = "train"  # until prepare_training resolves cfg.batch_norm

    def prepare_training(self, per_process_batch: int, world_size: int = 1,
                         device_type: str = "cpu") -> None:
        """Apply ``cfg.batch_norm`` for ``per_process_batch`` images per process (called by
        the training loop before it builds the optimizer and wraps the model in DDP)."""
        mode = resolve_batch_norm_mode(self.cfg.batch_norm, per_process_batch)
        if mode == "sync":
            check_sync_batch_norm(world_size, device_type)
            to_sync_batch_norm(self)
        self.batch_norm_mode = mode
        self.train(self.training)

    def train(self, mode: bool = True) -> "Yolact":
        super().train(mode)
        if mode and getattr(self, "batch_norm_mode", "train") == "frozen":
            freeze_batch_norm(self)  # as the official Yolact.train: BN stays in eval mode
        return self

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if name.startswith("backbone") or not isinstance(m, nn.Conv2d):
                continue
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ anchors

    @property
    def level_scales(self) -> list[float]:
        """Anchor scales of P3-P7 in pixels at ``cfg.image_size`` (``s_x = s_550/550 * x``)."""
        return scaled_anchor_scales(self.cfg.anchor_scales, self.cfg.image_size,
                                    self.cfg.anchor_reference_size)

    def anchors(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int],
                device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        key = (tuple(feature_sizes), tuple(image_size), str(device), dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = generate_anchors(
                feature_sizes, image_size, self.level_scales, self.cfg.aspect_ratios,
                self.cfg.square_anchors, device=device, dtype=dtype)
        return self._anchor_cache[key]

    # ------------------------------------------------------------------ forward

    def forward(self, images: Tensor, targets: list[dict] | None = None, *,
                extras: bool = False):
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        pyramid = self.fpn(self.backbone(images))
        protos = self.protonet(pyramid[0]) if self.protonet is not None else None
        outs = [self.head(p) for p in pyramid]
        cls = torch.cat([o[0] for o in outs], dim=1)
        box = torch.cat([o[1] for o in outs], dim=1)
        mask = torch.cat([o[2] for o in outs], dim=1)
        sizes = [(int(p.shape[-2]), int(p.shape[-1])) for p in pyramid]
        anchors = self.anchors(sizes, image_size, images.device)
        if self.training:
            if targets is None:
                raise ValueError("Yolact in training mode needs targets")
            sem = self.semantic(pyramid[0]) if self.semantic is not None else None
            return self.loss(cls, box, mask, protos, sem, anchors, targets, image_size)
        proto_size = (2 * sizes[0][0], 2 * sizes[0][1])
        return self.postprocess(cls, box, mask, protos, anchors, image_size, proto_size, extras)

    @torch.no_grad()
    def nms_inputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """What NMS sees at test time: decoded boxes (B, A, 4) xyxy in input pixels and
        foreground class scores (B, A, K). For timing NMS variants on real score distributions."""
        image_size = (int(images.shape[-2]), int(images.shape[-1]))
        pyramid = self.fpn(self.backbone(images))
        outs = [self.head(p) for p in pyramid]
        cls = torch.cat([o[0] for o in outs], dim=1)
        box = torch.cat([o[1] for o in outs], dim=1)
        anchors = self.anchors([(int(p.shape[-2]), int(p.shape[-1])) for p in pyramid], image_size,
                               images.device)
        return self.decode(cls, box, anchors, image_size)

    def decode(self, cls: Tensor, box: Tensor, anchors: Tensor,
               image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Head outputs -> (boxes clipped to the input, softmax foreground scores)."""
        height, width = image_size
        scores_all = F.softmax(cls, dim=-1)[..., 1:]  # (B, A, K) foreground scores
        boxes_all = decode_boxes(box, anchors, self.cfg.box_variances)
        limits = boxes_all.new_tensor([width, height, width, height])
        return torch.minimum(boxes_all.clamp(min=0), limits), scores_all

    # ------------------------------------------------------------- inference

    def postprocess(self, cls: Tensor, box: Tensor, mask: Tensor, protos: Tensor | None,
                    anchors: Tensor, image_size: tuple[int, int], proto_size: tuple[int, int],
                    extras: bool = False) -> list[dict]:
        cfg = self.cfg
        height, width = image_size
        h, w = proto_size
        boxes_all, scores_all = self.decode(cls, box, anchors, image_size)
        grid_scale = boxes_all.new_tensor([width / w, height / h, width / w, height / h])
        nms_kwargs = {"second_threshold": cfg.second_threshold} if cfg.nms == "fast" else {}
        results = []
        for b in range(cls.shape[0]):
            det = nms_ops.nms(cfg.nms, boxes_all[b], scores_all[b],
                              score_threshold=cfg.score_threshold,
                              iou_threshold=cfg.nms_iou_threshold, top_k=cfg.nms_top_k,
                              max_detections=cfg.max_detections, **nms_kwargs)
            coeffs = det.select(mask[b])
            grid_boxes = det.boxes / grid_scale
            region = crop_region(grid_boxes, h, w)
            if self.fc_mask:
                probs = paste_masks(coeffs.view(-1, cfg.fc_mask_size, cfg.fc_mask_size).sigmoid(),
                                    grid_boxes, (h, w))
            else:
                # M = sigmoid(P C^T): (h*w, k) @ (k, N)
                proto = protos[b]
                flat = proto.permute(1, 2, 0).reshape(h * w, -1) @ coeffs.t()
                probs = flat.sigmoid().t().reshape(-1, h, w)
            probs = probs * region.to(probs.dtype)
            out = {"scores": det.scores, "labels": det.labels, "boxes": det.boxes,
                   "mask_probs": probs, "mask_threshold": cfg.mask_threshold}
            if extras:
                if self.fc_mask:
                    out["fc_masks"] = coeffs.view(-1, cfg.fc_mask_size, cfg.fc_mask_size).sigmoid()
                else:
                    out["prototypes"] = protos[b]
                    out["coefficients"] = coeffs
            results.append(out)
        return results


def paste_masks(masks: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Paste box-relative masks (N, S, S) into an ``size`` grid at ``boxes`` (grid units,
    xyxy), bilinearly; zero outside the boxes. Returns (N, h, w)."""
    n = masks.shape[0]
    h, w = size
    if n == 0:
        return masks.new_zeros((0, h, w))
    xs = torch.arange(w, device=masks.device, dtype=masks.dtype) + 0.5
    ys = torch.arange(h, device=masks.device, dtype=masks.dtype) + 0.5
    x1, y1, x2, y2 = boxes.unbind(1)
    u = (xs[None] - x1[:, None]) / (x2 - x1).clamp(min=1e-6)[:, None] * 2 - 1  # (N, w)
    v = (ys[None] - y1[:, None]) / (y2 - y1).clamp(min=1e-6)[:, None] * 2 - 1  # (N, h)
    grid = torch.stack([u[:, None, :].expand(n, h, w), v[:, :, None].expand(n, h, w)], dim=-1)
    out = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, 0]


__all__ = ["Yolact", "YolactFPN", "Protonet", "PredictionHead", "paste_masks"]
