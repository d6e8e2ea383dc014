"""YOLACT's training augmentation (SSDAugmentation) on torchvision.transforms.v2, and the
crowd / small-box steps that follow it.

The official ``utils/augmentations.py`` applies, in this order: photometric distortion,
expand (zoom-out), SSD random sample crop, random mirror, resize to 550x550, discard of small
boxes. Each step here is the torchvision v2 transform set to the official options; what
torchvision cannot express is stated where it differs:

* :class:`PhotometricDistort` is ``RandomPhotometricDistort`` (each of brightness, contrast,
  saturation, hue with p=0.5; contrast before or after the colour steps, as the official
  ``PhotometricDistort``) without its channel permutation, which the official
  ``RandomLightingNoise`` has commented out ("Don't shuffle the channels please"). The
  ranges are the official ones: contrast and saturation factors 0.5-1.5, hue +-18 degrees
  (0.05 of the circle), brightness +-32 of 255. The kernels are torchvision's: brightness
  multiplies by [1 - 32/255, 1 + 32/255] where the official code adds a delta; contrast and
  saturation blend with the grey mean / grey image where the official code scales the pixel
  values / the HSV saturation.
* Expand = ``RandomZoomOut(side_range=(1, 4), p=0.5)`` onto a canvas filled with the
  normalization mean (masks filled with 0), as the official ``Expand(mean)``.
* The random sample crop = ``RandomIoUCrop``: crop sides in [0.3, 1] of the image, aspect
  ratio 0.5-2, 50 trials, instances kept when their box centre lies inside the crop (their
  masks cropped along). ``min_iou`` lists the options drawn uniformly; an option >= 1 leaves
  the image uncropped, 0 is an unconstrained crop. The official list is (none, 0.1, 0.3, 0.7,
  0.9, unconstrained), but its IoU test (``overlap.min() < min_iou and max_iou <
  overlap.max()`` with ``max_iou = inf``) never rejects a crop, so every option but "none"
  acts unconstrained; the code comment says fixing it halved mAP.

Every step recomputes boxes from the masks afterwards (a mask's bounding box is its box)
and drops instances whose mask left the image. Images are float 0-255 RGB throughout; the
photometric kernels run on a 0-1 copy, since torchvision clamps float images to [0, 1].

Random draws come from torch's global RNG, as torchvision's do; the training loop seeds it
per sample, so a seed fixes the output.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from rtinst.data.transforms import IMAGENET_MEAN, Target, _with_masks, keep_instances

# Official RandomSampleCrop options: None (whole image), min IoU 0.1/0.3/0.7/0.9, (None, None).
SSD_MIN_IOU = (1.0, 0.1, 0.3, 0.7, 0.9, 0.0)


class PhotometricDistort(v2.RandomPhotometricDistort):
    """``RandomPhotometricDistort`` without the channel permutation (see the module doc)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        params["channel_permutation"] = None
        return params


def yolact_photometric_distort() -> PhotometricDistort:
    return PhotometricDistort(brightness=(1 - 32 / 255, 1 + 32 / 255), contrast=(0.5, 1.5),
                              saturation=(0.5, 1.5), hue=(-18 / 360, 18 / 360), p=0.5)


def _to_sample(image: torch.Tensor, target: Target, unit_range: bool) -> dict[str, Any]:
    h, w = image.shape[-2:]
    sample = {
        "image": tv_tensors.Image(image / 255.0 if unit_range else image),
        "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(target["masks"]),
        "labels": target["labels"],
    }
    if "iscrowd" in target:
        sample["iscrowd"] = target["iscrowd"]
    return sample


def _labels_and_crowd(sample: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-instance tensor besides boxes/masks."""
    return tuple(sample[k] for k in ("labels", "iscrowd") if k in sample)


class TV2Step:
    """Runs a torchvision v2 transform on an (image, target) pair.

    ``sanitize``: follow it with ``SanitizeBoundingBoxes`` (drops the instances a crop
    marked invalid, with their masks, labels and crowd flags). Boxes are then recomputed
    from the masks and instances with an empty mask dropped, unless ``translation``: the
    transform only shifts pixels by whole pixels, with none lost (the zoom-out), so the boxes
    torchvision shifted are the masks' boxes already and the pass over the (up to 16x larger)
    masks is skipped. ``unit_range``: hand the transform the image scaled to [0, 1]
    (torchvision's colour kernels expect it).
    """

    def __init__(self, transform: Callable, sanitize: bool = False, name: str | None = None,
                 unit_range: bool = False, translation: bool = False):
        self.unit_range, self.translation = unit_range, translation
        steps = [transform]
        if sanitize:
            steps.append(v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_labels_and_crowd))
        self.transform = v2.Compose(steps) if len(steps) > 1 else transform
        self.name = name or type(transform).__name__

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        out = self.transform(_to_sample(image, target, self.unit_range))
        image = out["image"].as_subclass(torch.Tensor)
        if self.unit_range:
            image = image * 255.0
        target = dict(target, labels=out["labels"], boxes=out["boxes"].as_subclass(torch.Tensor))
        if "iscrowd" in out:
            target["iscrowd"] = out["iscrowd"]
        masks = out["masks"].as_subclass(torch.Tensor)
        if self.translation:
            return image, dict(target, masks=masks, size=(int(masks.shape[-2]), int(masks.shape[-1])))
        return image, _with_masks(target, masks)

    def __repr__(self) -> str:
        return f"TV2Step({self.name})"


class RandomSampleCrop(TV2Step):
    """SSD's random sample crop (``RandomIoUCrop``, see the module doc).

    The official crop also needs at least one regular (non-crowd) instance in the crop;
    torchvision's accepts any box, crowd included, so a crop left without a regular
    instance (or whose instances' masks all fall outside it) is drawn again, up to
    ``trials`` times, then the image is left uncropped. Images without a regular instance
    are left as they are.
    """

    def __init__(self, min_iou: Sequence[float] = SSD_MIN_IOU, trials: int = 50):
        if not min_iou:
            raise ValueError("min_iou needs at least one option")
        self.min_iou, self.trials = tuple(float(v) for v in min_iou), trials
        super().__init__(v2.RandomIoUCrop(min_scale=0.3, max_scale=1.0, min_aspect_ratio=0.5,
                                          max_aspect_ratio=2.0, sampler_options=list(self.min_iou),
                                          trials=trials), sanitize=True, name="RandomIoUCrop")

    @staticmethod
    def _num_regular(target: Target) -> int:
        crowd = target.get("iscrowd")
        return int(target["labels"].shape[0] if crowd is None else (~crowd.bool()).sum())

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self._num_regular(target) == 0:
            return image, target
        for _ in range(self.trials):
            out_image, out = super().__call__(image, target)
            if self._num_regular(out):
                return out_image, out
        return image, target

    def __repr__(self) -> str:
        return f"RandomSampleCrop(min_iou={list(self.min_iou)})"


def ssd_augmentation(photometric: bool = True, expand: bool = True, sample_crop: bool = True,
                     min_iou: Sequence[float] = SSD_MIN_IOU,
                     mean: Sequence[float] = IMAGENET_MEAN) -> list[Callable]:
    """The steps of YOLACT's SSDAugmentation before its mirror and resize."""
    steps: list[Callable] = []
    if photometric:
        steps.append(TV2Step(yolact_photometric_distort(), name="PhotometricDistort",
                             unit_range=True))
    if expand:
        fill = {tv_tensors.Image: list(mean), "others": 0}
        steps.append(TV2Step(v2.RandomZoomOut(fill=fill, side_range=(1.0, 4.0), p=0.5),
                             name="RandomZoomOut(1-4)", translation=True))
    if sample_crop:
        steps.append(RandomSampleCrop(min_iou))
    return steps


class DiscardSmallBoxes(TV2Step):
    """Drop instances (crowd regions too) whose box is narrower or lower than ``min_size``
    pixels, with their masks and labels (``SanitizeBoundingBoxes``)."""

    def __init__(self, min_size: float):
        self.min_size = float(min_size)
        super().__init__(v2.SanitizeBoundingBoxes(min_size=self.min_size, min_area=1,
                                                  labels_getter=_labels_and_crowd))

    def __repr__(self) -> str:
        return f"DiscardSmallBoxes({self.min_size:g})"


class SplitCrowd:
    """Move crowd regions out of the instances: ``crowd_boxes`` (M, 4) xyxy, and drop their
    masks, labels and the ``iscrowd`` flags, so no model trains on them as targets."""

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        crowd = target.get("iscrowd")
        if crowd is None:
            crowd = torch.zeros(target["labels"].shape[0], dtype=torch.bool)
        crowd = crowd.bool()
        crowd_boxes = target["boxes"][crowd]
        target = keep_instances(target, ~crowd)
        target.pop("iscrowd", None)
        target["crowd_boxes"] = crowd_boxes
        return image, target

    def __repr__(self) -> str:
        return "SplitCrowd()"
