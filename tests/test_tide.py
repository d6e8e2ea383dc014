"""TIDE error breakdown: agreement with a direct tidecv run, perfect predictions, plot, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pytest

from eval_fixtures import gt_as_predictions, make_gt, perturbed_predictions, write_json
from rtinst.cli import evaluate as cli_evaluate
from rtinst.engine.tide import MAIN_ERRORS, SPECIAL_ERRORS, TIDE_KEYS, run_tide
from rtinst.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    gt = make_gt(num_images=6, seed=0)
    d = tmp_path_factory.mktemp("tide")
    return {
        "gt_dict": gt,
        "gt": write_json(d / "gt.json", gt),
        "perfect": write_json(d / "perfect.json", gt_as_predictions(gt)),
        "noisy": write_json(d / "noisy.json", perturbed_predictions(gt, seed=1)),
    }


@pytest.fixture(autouse=True)
def private_tide_path(tmp_path, monkeypatch):
    """Direct tidecv runs below must not write into the user's data directory."""
    monkeypatch.setenv("TIDE_PATH", str(tmp_path / "tidecv_home"))


def direct_tidecv(gt_path, res_path) -> dict:
    from tidecv import TIDE, datasets

    tide = TIDE(mode=TIDE.MASK)
    run = tide.evaluate(datasets.COCO(str(gt_path)), datasets.COCOResult(str(res_path)), mode=TIDE.MASK, name="ref")
    errors = tide.get_all_errors()
    out = {"tide_ap50": run.ap}
    out.update({key: errors["main"]["ref"][short] for short, key in MAIN_ERRORS.items()})
    out.update({key: errors["special"]["ref"][short] for short, key in SPECIAL_ERRORS.items()})
    return out


def test_matches_direct_tidecv(files):
    with matplotlib.rc_context():
        ref = direct_tidecv(files["gt"], files["noisy"])
    ours = run_tide(files["gt"], files["noisy"])
    assert set(ours) == set(TIDE_KEYS) | {"tide_plot"}
    for key in TIDE_KEYS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    # A meaningful case: several error types present, AP well below 100.
    assert 10 < ours["tide_ap50"] < 95
    assert sum(ours[k] > 0 for k in MAIN_ERRORS.values()) >= 4
    assert ours["tide_fp"] > 0 and ours["tide_fn"] > 0


def test_perfect_predictions_have_no_errors(files, tmp_path):
    out = run_tide(files["gt"], files["perfect"], out_dir=tmp_path / "plots")
    assert out["tide_ap50"] == pytest.approx(100.0)
    for key in TIDE_KEYS[1:]:
        assert out[key] == pytest.approx(0.0, abs=1e-9), key
    # tidecv's pie chart divides by the error sum: with no errors there is nothing to plot.
    assert out["tide_plot"] is None


def test_plot_written_and_global_style_untouched(files, tmp_path):
    rc_before = dict(matplotlib.rcParams)
    out = run_tide(files["gt"], files["noisy"], out_dir=tmp_path / "plots", name="sparseinst", plot_quality=0.15)
    png = tmp_path / "plots" / "sparseinst_mask_summary.png"
    assert out["tide_plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert [p.name for p in png.parent.iterdir()] == [png.name]  # no temp files left
    assert dict(matplotlib.rcParams) == rc_before  # tidecv's seaborn.set() did not leak
    assert not (tmp_path / "tidecv_home").exists()  # scratch plots went to a private temp dir


def test_default_plot_is_a_150_dpi_palette_png(files, tmp_path):
    # one plot per run is committed beside its record: it must stay small
    from PIL import Image

    out = run_tide(files["gt"], files["noisy"], out_dir=tmp_path, name="yolact")
    with Image.open(out["tide_plot"]) as im:
        assert im.mode == "P" and len(im.getcolors(maxcolors=256)) <= 128
        # tidecv's 300 dpi chart is ~2700 x 4300 px (its width follows the labels)
        assert 1200 < im.size[0] < 1500 and 2000 < im.size[1] < 2300, im.size
    assert Path(out["tide_plot"]).stat().st_size < 150_000


def test_compact_png_rescales_and_keeps_the_picture(tmp_path):
    from PIL import Image

    from rtinst.engine.tide import compact_png

    src = tmp_path / "src.png"
    rgb = Image.new("RGB", (200, 100), (255, 255, 255))
    rgb.paste((200, 30, 30), (0, 0, 100, 100))  # left half red
    rgb.save(src)
    compact_png(src, tmp_path / "out.png", scale=0.5)
    with Image.open(tmp_path / "out.png") as im:
        assert im.size == (100, 50) and im.mode == "P"
        px = im.convert("RGB")
        assert px.getpixel((10, 25)) == (200, 30, 30) and px.getpixel((90, 25)) == (255, 255, 255)


def test_gt_without_bbox_or_file_name(files, tmp_path):
    gt = json.loads(files["gt"].read_text())
    for ann in gt["annotations"]:
        del ann["bbox"]
    for img in gt["images"]:
        del img["file_name"]
    slim = write_json(tmp_path / "slim_gt.json", gt)
    assert run_tide(slim, files["noisy"]) == run_tide(files["gt"], files["noisy"])


def test_results_list_and_validation(files):
    res = json.loads(files["noisy"].read_text())
    assert run_tide(files["gt"], res) == run_tide(files["gt"], files["noisy"])
    with pytest.raises(UserError, match="polygon"):
        run_tide(files["gt"], [dict(res[0], segmentation=[[1, 1, 9, 1, 9, 9]])])
    with pytest.raises(UserError, match="name"):
        run_tide(files["gt"], files["noisy"], name="a/b")


def test_cli_tide_writes_metrics(files, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="rtinst")
    cli_evaluate.register(parser.add_subparsers())
    out = tmp_path / "metrics.json"
    args = parser.parse_args(["evaluate", "--gt", str(files["gt"]), "--results", str(files["perfect"]),
                              "--tide", "--out", str(out)])
    assert args.func(args) == 0
    record = json.loads(out.read_text())
    assert record["ap"] == pytest.approx(100.0) and record["tide_ap50"] == pytest.approx(100.0)
    assert all(record[k] == pytest.approx(0.0) for k in TIDE_KEYS[1:])
    assert "not comparable with pycocotools" in capsys.readouterr().out
