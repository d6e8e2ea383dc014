"""validate_coco: each bad input gives one line naming the file and the id."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from rtinst.data.validate import rle_string_to_counts, validate_coco
from rtinst.errors import UserError

H, W = 16, 20


def base() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 10, 1, 10, 10, 1, 10]],
             "area": 81.0, "bbox": [1, 1, 9, 9], "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "thing"}],
    }


@pytest.fixture
def root(tmp_path) -> Path:
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(tmp_path / name)
    return tmp_path


def check(root: Path, data: dict | str, check_images: bool = True):
    path = root / "instances_x.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return validate_coco(path, root, check_images=check_images)


def only_error(report) -> str:
    assert len(report.errors) == 1, report.errors
    line = report.errors[0]
    assert "\n" not in line and "instances_x.json" in line
    with pytest.raises(UserError) as e:
        report.raise_for_errors()
    assert str(e.value) == line
    return line


def test_valid(root):
    report = check(root, base())
    assert report.ok and report.warning_lines() == []
    assert report.num_images == 2 and report.num_instances == 1
    assert report.images_without_instances == [2]
    assert report.class_counts == {"thing": 1} and report.area_buckets["small"] == 1
    assert "2 images, 1 instances" in report.summary()


def test_malformed_json_names_line_and_column(root):
    text = json.dumps(base(), indent=1).replace('"images": [', '"images": [,', 1)
    line = only_error(check(root, text))
    assert "malformed JSON at line 2, column" in line


def test_missing_top_level_key(root):
    data = base()
    del data["categories"]
    assert "missing top-level key 'categories'" in only_error(check(root, data))


def test_missing_image_file(root):
    (root / "b.png").unlink()
    line = only_error(check(root, base()))
    assert "image id 2" in line and "b.png" in line and "not found" in line
    assert check(root, base(), check_images=False).ok


def test_image_size_mismatch(root):
    data = base()
    data["images"][0]["height"] = H + 1
    line = only_error(check(root, data))
    assert "image id 1" in line and "20x16" in line


@pytest.mark.parametrize("field, value, expected", [
    ("image_id", 99, "annotation id 7: unknown image_id 99"),
    ("category_id", 42, "annotation id 7: unknown category_id 42"),
    ("segmentation", {"size": [H, W], "counts": [5, 3]}, "annotation id 7: RLE counts sum to 8"),
    ("segmentation", {"size": [H, W], "counts": "~~garbage"}, "annotation id 7: cannot decode compressed RLE"),
    ("segmentation", {"size": [H + 1, W], "counts": [H * W + W]}, "annotation id 7: RLE size"),
    ("segmentation", "oops", "annotation id 7: segmentation is neither"),
    ("segmentation", [[1, 2, 3, 4, 5, 6, 7]], "annotation id 7: polygon with an odd number"),
])
def test_bad_annotation_names_its_id(root, field, value, expected):
    data = base()
    data["annotations"][0][field] = value
    assert expected in only_error(check(root, data))


def test_degenerate_annotations_one_warning_line(root):
    data = base()
    good = data["annotations"][0]
    for aid, changes in ((12, {"segmentation": []}),
                         (40, {"segmentation": [[1, 1, 5, 5]]}),
                         (77, {"segmentation": [[1, 1, 5, 1, 9, 1]]}),  # collinear: zero area
                         (80, {"bbox": [1, 1, 0, 9]}),
                         (81, {"segmentation": {"size": [H, W], "counts": [H * W]}})):
        data["annotations"].append(dict(copy.deepcopy(good), id=aid, **changes))
    report = check(root, data)
    assert report.ok and report.num_instances == 1
    lines = report.warning_lines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{root / 'instances_x.json'}: skipped 5 degenerate annotations (ids 12, 40, 77, 80, 81): ")
    assert "2 zero-area mask" in lines[0] and "empty polygon list" in lines[0] and "zero-size bbox" in lines[0]
    single = base()
    single["annotations"].append(dict(copy.deepcopy(good), id=9, segmentation=[]))
    assert check(root, single).warning_lines()[0].endswith("skipped 1 degenerate annotation (ids 9): empty polygon list")


def test_many_errors_are_summarised(root):
    data = base()
    data["annotations"] += [dict(copy.deepcopy(data["annotations"][0]), id=i, image_id=100 + i) for i in range(20, 25)]
    report = check(root, data)
    assert len(report.errors) == 5
    with pytest.raises(UserError, match=r"annotation id 20: .*\(and 4 more problems"):
        report.raise_for_errors()


def test_missing_file_and_area(root, tmp_path):
    report = validate_coco(tmp_path / "nope.json", root)
    assert report.errors == [f"{tmp_path / 'nope.json'}: annotation file not found"]
    data = base()
    del data["annotations"][0]["area"]
    assert "have no 'area'" in check(root, data).warning_lines()[0]


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = (rng.random((13, 17)) < rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = rle_string_to_counts(rle["counts"])
        assert sum(counts) == m.size and sum(counts[1::2]) == m.sum()
        back = mask_utils.decode(mask_utils.frPyObjects({"size": [13, 17], "counts": counts}, 13, 17))
        assert np.array_equal(back, m)
