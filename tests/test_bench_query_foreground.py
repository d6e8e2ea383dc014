"""FastInst query-foreground measure: which GT object each query location falls in (pixel
edges, padding, overlaps) and the summary over images, on hand-made masks."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from rtinst.errors import UserError

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "bench_query_foreground", REPO / "tests/benchmarks/bench_query_foreground.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _masks() -> torch.Tensor:
    """A 4 x 6 image (h=4, w=6): object 0 covers rows 0-1, columns 0-1; object 1 covers
    rows 1-3, columns 4-5 (4 + 6 = 10 of the 24 pixels)."""
    m = torch.zeros(2, 4, 6, dtype=torch.bool)
    m[0, 0:2, 0:2] = True
    m[1, 1:4, 4:6] = True
    return m


def test_pixel_centres_and_background():
    loc = torch.tensor([[0.5, 0.5],   # object 0
                        [1.5, 1.5],   # object 0
                        [4.5, 3.5],   # object 1
                        [3.5, 0.5]])  # background
    r = bench.query_foreground(loc, _masks())
    assert r["queries"] == 4 and r["queries_inside"] == 3
    assert r["share_inside"] == pytest.approx(0.75)
    assert r["queries_in_object"] == [2, 1]
    assert r["object_area_share"] == pytest.approx(10 / 24)


def test_mask_border_belongs_to_the_pixel_right_and_below():
    m = _masks()
    # x = 2.0 is the right edge of object 0 (columns 0-1): pixel column 2, background.
    # x = 4.0 is the left edge of object 1 (columns 4-5): pixel column 4, inside.
    # (0, 0) is the top-left corner of object 0's first pixel: inside.
    # y = 1.0 is the top edge of object 1's first row (row 1): inside; y = 0.999 is row 0: not.
    loc = torch.tensor([[2.0, 0.5], [4.0, 2.5], [0.0, 0.0], [5.0, 1.0], [5.0, 0.999]])
    r = bench.query_foreground(loc, m)
    assert r["queries_inside"] == 3
    assert r["queries_in_object"] == [1, 2]


def test_locations_off_the_image_are_outside_every_object():
    m = torch.ones(1, 4, 6, dtype=torch.bool)  # the whole image is one object
    # x = 6.0 / y = 4.0 are the image's right / bottom edge: the padding begins there
    loc = torch.tensor([[6.0, 1.0], [1.0, 4.0], [-0.1, 1.0], [1.0, -0.5], [7.5, 5.5], [5.99, 3.99]])
    r = bench.query_foreground(loc, m)
    assert r["queries_inside"] == 1 and r["queries_in_object"] == [1]
    assert r["share_inside"] == pytest.approx(1 / 6)
    assert r["object_area_share"] == 1.0


def test_overlapping_objects_count_the_query_for_both_but_once_in_the_share():
    m = torch.zeros(2, 3, 3, dtype=torch.bool)
    m[0, :, 0:2] = True
    m[1, :, 1:3] = True  # column 1 is in both
    r = bench.query_foreground(torch.tensor([[1.5, 1.5], [2.5, 0.5]]), m)
    assert r["queries_inside"] == 2 and r["share_inside"] == 1.0
    assert r["queries_in_object"] == [1, 2]
    assert r["object_area_share"] == 1.0  # the union, not the sum (6 + 6 of 9)


def test_image_without_objects():
    r = bench.query_foreground(torch.tensor([[0.5, 0.5]]), torch.zeros(0, 4, 6, dtype=torch.bool))
    assert r["queries_inside"] == 0 and r["share_inside"] == 0.0
    assert r["queries_in_object"] == [] and r["object_area_share"] == 0.0


def test_bad_shapes_are_named():
    with pytest.raises(UserError, match=r"locations must be \(N, 2\)"):
        bench.query_foreground(torch.zeros(3), _masks())
    with pytest.raises(UserError, match=r"gt_masks must be \(M, h, w\)"):
        bench.query_foreground(torch.zeros(1, 2), torch.zeros(4, 6, dtype=torch.bool))


def test_summary_pools_objects_and_takes_image_medians():
    rows = [{"queries": 4, "queries_inside": 3, "share_inside": 0.75, "object_area_share": 0.5,
             "queries_in_object": [2, 1]},
            {"queries": 4, "queries_inside": 0, "share_inside": 0.0, "object_area_share": 0.1,
             "queries_in_object": [0]},
            {"queries": 4, "queries_inside": 2, "share_inside": 0.5, "object_area_share": 0.3,
             "queries_in_object": [2, 0, 0]}]
    s = bench.summarize(rows)
    assert s["images"] == 3 and s["objects"] == 6 and s["images_without_objects"] == 0
    assert s["share_inside"] == {"median": 0.5, "mean": pytest.approx(1.25 / 3),
                                 "std": pytest.approx(0.381881, abs=1e-6)}
    assert s["object_area_share"]["median"] == 0.3
    assert s["object_area_share"]["mean"] == pytest.approx(0.3)
    assert s["queries_per_object"] == pytest.approx(5 / 6)  # pooled over objects, not images
    assert s["objects_hit"] == pytest.approx(3 / 6)
    assert s["concentration_mean"] == pytest.approx((1.25 / 3) / 0.3)
    assert not math.isnan(s["queries_per_image"]) and s["queries_per_image"] == 4


def test_summary_refuses_nothing_to_measure():
    with pytest.raises(UserError, match="no image with queries and GT objects"):
        bench.summarize([{"queries": 4, "queries_inside": 0, "share_inside": 0.0,
                          "object_area_share": 0.0, "queries_in_object": []}])
