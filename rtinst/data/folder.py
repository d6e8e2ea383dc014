"""A folder of images without annotations, for prediction: the test-time transforms of a
``DataConfig`` and empty targets, so batches collate like the COCO dataset's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rtinst.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageFolder(torch.utils.data.Dataset):
    """Images of ``image_dir`` (sorted by name; ids 1..N); ``info`` lists them as a COCO
    ``images`` section (id, file_name, height, width)."""

    def __init__(self, image_dir: str | os.PathLike, transforms: Optional[Callable] = None):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise UserError(f"--images {image_dir}: not a folder")
        self.files = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise UserError(f"--images {image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.transforms = transforms
        self.info: list[dict[str, Any]] = []
        for i, path in enumerate(self.files, start=1):
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (UnidentifiedImageError, OSError) as e:
                raise UserError(f"{path}: cannot read image: {e}") from None
            self.info.append({"id": i, "file_name": path.name, "height": h, "width": w})

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> torch.Tensor:
        """float (3, H, W), 0-255 RGB."""
        with Image.open(self.files[index]) as im:
            array = np.array(im.convert("RGB"))
        return torch.from_numpy(array).permute(2, 0, 1).float()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image = self.load_image(index)
        h, w = image.shape[-2:]
        target = {"masks": torch.zeros((0, h, w), dtype=torch.bool), "boxes": torch.zeros((0, 4)),
                  "labels": torch.zeros((0,), dtype=torch.int64), "image_id": index + 1,
                  "orig_size": (h, w), "size": (h, w)}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
