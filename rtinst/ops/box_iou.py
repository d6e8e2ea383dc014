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

import functools
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["batched_pairwise_iou", "iter_iou_triu", "triu_colmax", "triu_any_above"]


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


# Up to this many (i < j) pairs, triu_any_above evaluates the pairs one by one in NumPy
# (~1 us per op, vs ~5-10 us for an eager torch op, which dominates sparse inputs); above
# it the tiled torch column max is faster (dense inputs: 80 x 200 x 200). Measured on a
# 2-core CPU, 1 thread: ~16k pairs 0.66 ms vs 0.8-1.2 ms for torch, ~31k 1.4 ms vs 1.0 ms.
_PAIR_PATH_MAX_PAIRS = 1 << 14


@functools.lru_cache(maxsize=16)
def _pairs_by_column(k: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``(i, j)`` with ``i < j < k``, ordered by ``j``: the first ``n (n - 1) / 2`` of
    them are exactly the pairs with ``j < n``."""
    j, i = np.tril_indices(k, -1)
    return i.astype(np.intp), j.astype(np.intp)


def _any_above_pairs(boxes: np.ndarray, counts: np.ndarray, t: float) -> np.ndarray:
    """:func:`triu_any_above` on the ``sum n (n - 1) / 2`` real pairs, in NumPy."""
    b, k = boxes.shape[:2]
    n_pairs = counts * (counts - 1) // 2
    total = int(n_pairs.sum())
    out = np.zeros(b * k, dtype=bool)
    if total == 0:
        return out.reshape(b, k)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf as in torch
        _pair_iou_above(boxes.reshape(b * k, 4), n_pairs, total, k, t, out)
    return out.reshape(b, k)


def _pair_iou_above(flat: np.ndarray, n_pairs: np.ndarray, total: int, k: int, t: float,
                    out: np.ndarray) -> None:
    pi, pj = _pairs_by_column(k)
    # position of each pair inside its row's prefix of the (i, j) list
    pos = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    row0 = np.repeat(np.arange(n_pairs.shape[0]) * k, n_pairs)
    gi, gj = row0 + pi[pos], row0 + pj[pos]
    x1, y1, x2, y2 = flat.T.copy()
    area = (x2 - x1) * (y2 - y1)
    # the same operations, in the same order and dtype, as _iou_into: bit-identical IoUs
    w = np.minimum(x2[gi], x2[gj])
    w -= np.maximum(x1[gi], x1[gj])
    np.maximum(w, 0, out=w)
    h = np.minimum(y2[gi], y2[gj])
    h -= np.maximum(y1[gi], y1[gj])
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    union = area[gi] + area[gj]
    union -= w
    w /= union  # 0/0 (two empty boxes) is NaN, and NaN > t is False: never suppresses
    out[gj[w > t]] = True


def triu_any_above(boxes: Tensor, counts: Tensor, t: float) -> Tensor:
    """``S[b, j] = any_{i < j < counts[b]} IoU(boxes[b, i], boxes[b, j]) > t``: ``(B, k)`` bool.

    Fast NMS's suppression test ``K > t`` (see :func:`triu_colmax`) for rows whose real boxes
    are the prefix ``boxes[b, :counts[b]]`` (the rest is padding, never ``True``). Equal to
    ``(triu_colmax(boxes) > t) & (arange(k) < counts[:, None])`` (the reference). On CPU, for
    float32/float64 and at most ``_PAIR_PATH_MAX_PAIRS`` pairs, only the real pairs are
    evaluated, in NumPy with the same arithmetic (the boxes are detached: the result is a
    boolean that carries no gradient anyway); otherwise through :func:`triu_colmax`.
    """
    boxes = boxes.detach()
    b, k = boxes.shape[0], boxes.shape[1]
    if (boxes.device.type == "cpu" and boxes.dtype in (torch.float32, torch.float64)
            and not t < 0 and b and k):  # t < 0: K = 0 > t suppresses all, as in torch
        c = counts.numpy().astype(np.int64)
        if int((c * (c - 1)).sum()) // 2 <= _PAIR_PATH_MAX_PAIRS:
            return torch.from_numpy(_any_above_pairs(boxes.numpy(), c, t))
    slot = torch.arange(k, device=boxes.device)
    return (triu_colmax(boxes) > t) & (slot < counts[:, None])


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
