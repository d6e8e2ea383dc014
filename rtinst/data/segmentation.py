"""Binary masks <-> COCO segmentations, exactly.

:func:`mask_to_polygons` traces pixel-boundary polygons that pycocotools rasterizes back to
the very same pixels (None for a region with a hole, which COCO polygons cannot express);
:func:`rle_counts` gives uncompressed RLE (COCO's crowd regions), :func:`compressed_rle` the
compressed form through pycocotools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from rtinst.data.shapes import shoelace


def decode_polygons(polys: list[list[float]], h: int, w: int) -> np.ndarray:
    rles = mask_utils.frPyObjects(polys, h, w)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), end-exclusive, of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def mask_to_polygons(mask: np.ndarray) -> list[list[int]] | None:
    """Exact polygons along the pixel boundaries of ``mask``; None if it has a hole.

    Vertices lie on pixel corners, which pycocotools rasterizes back to exactly the same
    pixels. COCO polygons are unioned, so regions with holes must be stored as RLE instead.
    """
    if not mask.any():
        return []
    y0, y1, x0, x1 = mask_bbox(mask)
    p = np.pad(mask[y0:y1, x0:x1].astype(bool), 1)
    core = p[1:-1, 1:-1]
    stride = x1 - x0 + 1  # pixel corners per row of the window
    step = (1, stride, -1, -stride)  # +x, +y, -x, -y (image y points down)
    # Boundary edges, oriented clockwise on screen around the object: outer loops get a
    # positive shoelace area, hole loops a negative one. Corner (x, y) -> key y*stride + x.
    out: dict[int, Any] = {}
    saddles = set()
    for direction, neighbour, (dx, dy) in (
        (0, p[:-2, 1:-1], (0, 0)),  # top edge, walked +x from the pixel's top-left corner
        (1, p[1:-1, 2:], (1, 0)),  # right edge, walked +y
        (2, p[2:, 1:-1], (1, 1)),  # bottom edge, walked -x
        (3, p[1:-1, :-2], (0, 1)),  # left edge, walked -y
    ):
        rows, cols = np.nonzero(core & ~neighbour)
        for key in ((rows + dy) * stride + cols + dx).tolist():
            if key in out:  # two objects' corners touch diagonally here
                out[key] = [out[key], direction]
                saddles.add(key)
            else:
                out[key] = direction
    polygons = []
    while out:
        start = next((v for v in out if v not in saddles), next(iter(out)))
        v, d, corners, first = start, -1, [], None
        while True:
            nd = out[v]
            if v in saddles:  # turn right: diagonal neighbours stay separate polygons
                options = nd
                nd = (d + 1) % 4 if (d + 1) % 4 in options else options[0]
                options.remove(nd)
                out[v] = options[0]
                saddles.discard(v)
            else:
                del out[v]
            if nd != d:
                corners.append(v)
            if first is None:
                first = nd
            v += step[nd]
            d = nd
            if v == start:
                break
        if d == first:
            corners = corners[1:]  # the start was mid-edge, not a corner
        ys, xs = np.divmod(np.array(corners, dtype=np.int64), stride)
        loop = np.stack([xs + x0, ys + y0], axis=1)
        if shoelace(loop.astype(np.float64)) <= 0:
            return None  # a hole boundary
        polygons.append(loop.ravel().tolist())
    return polygons


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with a run of zeros)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return counts


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
