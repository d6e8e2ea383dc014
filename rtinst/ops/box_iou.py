"""Batched IoU matrices of boxes, bit-identical to ``torchvision.ops.box_iou``, tuned for CPU.

The NMS variants (:mod:`rtinst.ops.nms`) need, per class, the IoU of every pair of up to
``top_k`` candidates, or only the column max of its upper triangle (Fast NMS's ``K``).
``torchvision.ops.box_iou`` works on one matrix at a time and allocates its temporaries; here
the classes are a batch dimension, the matrices are built in cache-sized chunks with reused
buffers and padded to multiples of 8 columns on CPU (kernels vectorize far better), and the
column max evaluates only the tiles on/above the diagonal. On CUDA each matrix is built in
one piece. The arithmetic is torchvision's, ``inter / (area_i + area_j - inter)``, so
suppression decisions are the same as ``torchvision.ops.nms``'s; NaN (0/0, two empty boxes)
becomes 0: such a pair never suppresses.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

__all__ = ["batched_pairwise_iou", "iter_iou_triu", "triu_colmax"]


def _iou_into(rows: Tensor, cols: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """IoU of ``rows`` ``(n, r, 4)`` with ``cols`` ``(n, c, 4)`` -> ``(n, r, c)`` in ``out``.

    ``tmp`` is scratch of the same shape as ``out``. Same arithmetic as
    ``torchvision.ops.box_iou`` / ``torchvision.ops.nms`` (bit-identical values):
    ``inter / (area_i + area_j - inter)``.
    """
    # coordinate-major contiguous copies: broadcasting over stride-4 views is not vectorized
    rx1, ry1, rx2, ry2 = rows.permute(2, 0, 1).contiguous().unbind(0)
    cx1, cy1, cx2, cy2 = cols.permute(2, 0, 1).contiguous().unbind(0)
    r_area = (rx2 - rx1) * (ry2 - ry1)
    c_area = (cx2 - cx1) * (cy2 - cy1)
    torch.minimum(rx2[:, :, None], cx2[:, None, :], out=out)
    out.sub_(torch.maximum(rx1[:, :, None], cx1[:, None, :], out=tmp)).clamp_(min=0)
    torch.minimum(ry2[:, :, None], cy2[:, None, :], out=tmp)
    tmp.sub_(torch.maximum(ry1[:, :, None], cy1[:, None, :])).clamp_(min=0)
    out.mul_(tmp)  # intersection
    torch.add(r_area[:, :, None], c_area[:, None, :], out=tmp).sub_(out)  # union
    return out.div_(tmp)


# Work on this many IoU entries at a time so the temporaries stay in cache (tuned on CPU).
_CHUNK_ELEMS = 1 << 19


# Matrices are padded to a multiple of this many columns: CPU kernels vectorize far better.
_ALIGN = 8


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_boxes(boxes: Tensor, k: int) -> Tensor:
    """Pad ``(B, n, 4)`` with empty boxes to ``(B, k, 4)``. An empty (all-zero) box has IoU 0
    (or 0/0 -> NaN -> 0) with every box, and padding always ranks after real candidates."""
    n = boxes.shape[1]
    if k == n:
        return boxes
    return torch.cat([boxes, boxes.new_zeros((boxes.shape[0], k - n, 4))], dim=1)


def iter_iou_triu(boxes: Tensor, chunk_elems: int | None = None) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, end, X)`` with ``X = triu(IoU(boxes[start:end]), 1)``, NaN -> 0.

    ``boxes`` is ``(B, k, 4)``; ``X[b, i, j]`` (``i < j``) is the IoU of box ``j`` with the
    higher-ranked box ``i`` of batch entry ``b``; the lower triangle and diagonal are 0.
    ``X`` is ``(end - start, kp, kp)`` with ``kp >= k`` (rows/columns ``>= k`` are padding
    whose entries are 0), and a reused buffer: consume it before advancing the iterator.
    """
    b, k = boxes.shape[0], boxes.shape[1]
    if b == 0 or k == 0:
        return
    cpu = boxes.device.type == "cpu"
    kp = _round_up(k, _ALIGN) if cpu else k
    boxes = _pad_boxes(boxes, kp)
    if chunk_elems is None:
        chunk_elems = _CHUNK_ELEMS if cpu else 1 << 62
    step = max(1, min(b, chunk_elems // (kp * kp)))
    buf = boxes.new_empty((step, kp, kp))
    tmp = boxes.new_empty((step, kp, kp))
    upper = torch.ones(kp, kp, dtype=boxes.dtype, device=boxes.device).triu_(diagonal=1)
    for s in range(0, b, step):
        e = min(b, s + step)
        o, t = buf[: e - s], tmp[: e - s]
        _iou_into(boxes[s:e], boxes[s:e], o, t)
        # 0/0 (two empty boxes) is NaN: such pairs never suppress, as in torchvision.ops.nms
        o.nan_to_num_(nan=0.0).mul_(upper)
        yield s, e, o


# Tile edge for the CPU Fast NMS column max (only tiles on/above the diagonal are computed).
_TILE = 32
_TILE_CHUNK_ELEMS = 1 << 19


def triu_colmax(boxes: Tensor) -> Tensor:
    """``K[b, j] = max_{i < j} IoU(boxes[b, i], boxes[b, j])`` (0 for ``j = 0``): ``(B, k)``.

    The column-wise max of the upper triangle (diagonal excluded) of each batch entry's IoU
    matrix -- Fast NMS's ``K``. On CPU, for ``k > 2 * _TILE``, the ``k x k`` matrix is cut
    into ``T x T`` tiles of edge ~``_TILE`` and only the ``T (T + 1) / 2`` tiles on or above
    the diagonal are evaluated (about half the work of the full matrix), in cache-sized
    chunks. The values are the same as the max over the full ``triu(IoU, 1)``.
    """
    b, k = boxes.shape[0], boxes.shape[1]
    if b == 0 or k == 0:
        return boxes.new_zeros((b, k))
    # tiles pay off only for large k (per-op overhead dominates small matrices)
    n_tiles = -(-k // _TILE) if boxes.device.type == "cpu" and k > 2 * _TILE else 1
    if n_tiles == 1:
        out = None
        for s, e, x in iter_iou_triu(boxes):
            if out is None:
                out = boxes.new_empty((b, x.shape[-1]))
            torch.amax(x, dim=1, out=out[s:e])
        return out[:, :k]
    edge = _round_up(-(-k // n_tiles), _ALIGN)
    kp = edge * n_tiles
    boxes = _pad_boxes(boxes, kp)
    # tile pairs (row tile a, column tile c) with a <= c, grouped by column tile
    pairs = [(a, c) for c in range(n_tiles) for a in range(c + 1)]
    n_pairs = len(pairs)
    ta = torch.tensor([p[0] for p in pairs], device=boxes.device)
    tc = torch.tensor([p[1] for p in pairs], device=boxes.device)
    # diagonal tiles: keep only their strict upper triangle
    diag_pairs = [p for p, (a, c) in enumerate(pairs) if a == c]
    upper = torch.ones(edge, edge, dtype=boxes.dtype, device=boxes.device).triu_(diagonal=1)
    tiles = boxes.view(b, n_tiles, edge, 4)
    out = boxes.new_empty((b, n_tiles, edge))
    step = max(1, min(b, _TILE_CHUNK_ELEMS // (n_pairs * edge * edge)))
    buf = boxes.new_empty((step * n_pairs, edge, edge))
    tmp = torch.empty_like(buf)
    for s in range(0, b, step):
        e = min(b, s + step)
        n = (e - s) * n_pairs
        rows = tiles[s:e].index_select(1, ta).reshape(n, edge, 4)
        cols = tiles[s:e].index_select(1, tc).reshape(n, edge, 4)
        x = _iou_into(rows, cols, buf[:n], tmp[:n]).view(e - s, n_pairs, edge, edge)
        x.nan_to_num_(nan=0.0)
        for p in diag_pairs:
            x[:, p].mul_(upper)
        pair_max = x.amax(dim=2)  # (e - s, n_pairs, edge): column max within each tile
        p0 = 0
        for c in range(n_tiles):  # column tile c is covered by pairs p0 .. p0 + c
            torch.amax(pair_max[:, p0 : p0 + c + 1], dim=1, out=out[s:e, c])
            p0 += c + 1
    return out.view(b, kp)[:, :k]


def batched_pairwise_iou(boxes: Tensor) -> Tensor:
    """IoU of every pair of boxes within each batch entry: ``(B, k, 4) -> (B, k, k)``.

    Bit-identical to ``torchvision.ops.box_iou`` applied per batch entry, except that NaN
    (0/0, two empty boxes) is returned as 0.
    """
    b, k = boxes.shape[0], boxes.shape[1]
    out = boxes.new_empty((b, k, k))
    if b and k:
        _iou_into(boxes, boxes, out, torch.empty_like(out))
    return out.nan_to_num_(nan=0.0)
