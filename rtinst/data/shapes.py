"""Shape geometry of the synthetic dataset: the ten classes' outlines in unit coordinates.

Each shape is an outer ring (and, for the ring class, a hole) of radius about 1, centred on
the origin; :func:`shoelace` gives a ring's signed area and :func:`clip_polygon` cuts a placed
polygon to the image rectangle.
"""

from __future__ import annotations

import math

import numpy as np


def _ellipse(n: int, rx: float = 1.0, ry: float = 1.0, cx: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), ry * np.sin(t)], axis=1)


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * math.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    t = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _cross(a: float = 0.32) -> np.ndarray:
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a),
         (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)], dtype=np.float64)


def _crescent(n: int, d: float, r: float = 0.85) -> np.ndarray:
    """Unit disc minus the disc of radius r centred at (d, 0)."""
    x = (1.0 - r * r + d * d) / (2.0 * d)
    y = math.sqrt(max(1.0 - x * x, 1e-9))
    alpha = math.atan2(y, x)  # intersection angle on the outer circle
    beta = math.atan2(y, x - d)  # ... and on the inner circle
    t_out = np.linspace(alpha, 2 * math.pi - alpha, n)
    t_in = np.linspace(2 * math.pi - beta, beta, max(n // 2, 6))
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = np.stack([d + r * np.cos(t_in), r * np.sin(t_in)], axis=1)
    return np.concatenate([outer, inner[1:-1]], axis=0)


def _heart(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x / 16.0, -(y + 2.5) / 16.0], axis=1)


def unit_shape(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    if name == "circle":
        return _ellipse(n), None
    if name == "ellipse":
        return _ellipse(n, ry=rng.uniform(0.42, 0.62)), None
    if name == "square":
        return np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), None
    if name == "triangle":
        return _regular(3), None
    if name == "hexagon":
        return _regular(6), None
    if name == "star":
        return _star(5, rng.uniform(0.38, 0.48)), None
    if name == "cross":
        return _cross(rng.uniform(0.26, 0.36)), None
    if name == "crescent":
        return _crescent(n, d=rng.uniform(0.38, 0.55)), None
    if name == "heart":
        return _heart(n), None
    if name == "ring":
        return _ellipse(n), _ellipse(n, rx=(h := rng.uniform(0.45, 0.6)), ry=h)
    raise ValueError(f"unknown shape {name!r}")


def shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def clip_polygon(p: np.ndarray, w: float, h: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a polygon to the image rectangle [0, w] x [0, h]."""
    if p[:, 0].min() >= 0 and p[:, 1].min() >= 0 and p[:, 0].max() <= w and p[:, 1].max() <= h:
        return p
    for axis, bound, keep_low in ((0, 0.0, False), (0, w, True), (1, 0.0, False), (1, h, True)):
        if len(p) == 0:
            break
        inside = p[:, axis] <= bound if keep_low else p[:, axis] >= bound
        out = []
        for i in range(len(p)):
            a, b = p[i - 1], p[i]
            ia, ib = inside[i - 1], inside[i]
            if ia != ib:
                t = (bound - a[axis]) / (b[axis] - a[axis])
                out.append(a + t * (b - a))
            if ib:
                out.append(b)
        p = np.array(out).reshape(-1, 2)
    return p
