"""`rtinst data synthetic` and `rtinst data check`, through a parser built with register()."""

from __future__ import annotations

import argparse
import json

import pytest

from rtinst.cli import data as cli_data
from rtinst.errors import UserError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rtinst")
    cli_data.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_syn")
    assert run(["data", "synthetic", "--out", str(out), "--train", "4", "--val", "2", "--workers", "1"]) == 0
    return out


def test_synthetic_writes_files(dataset):
    assert (dataset / "annotations" / "instances_train.json").is_file()
    assert len(list((dataset / "val").glob("*.jpg"))) == 2
    stats = json.loads((dataset / "statistics.json").read_text())
    assert stats["train"]["images"] == 4


def test_synthetic_output_table(tmp_path, capsys):
    assert run(["data", "synthetic", "--out", str(tmp_path), "--train", "2", "--val", "1", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "| statistic | train | val |" in out and "instances / image" in out


def test_check_valid_dataset(dataset, capsys):
    code = run(["data", "check", "--ann", str(dataset / "annotations" / "instances_train.json"),
                "--images", str(dataset / "train")])
    captured = capsys.readouterr()
    assert code == 0
    assert "4 images" in captured.out and "instances per class" in captured.out
    assert captured.err == ""


def test_check_reports_problems_with_exit_1(dataset, tmp_path, capsys):
    data = json.loads((dataset / "annotations" / "instances_train.json").read_text())
    data["annotations"][0]["category_id"] = 999
    bad_id = data["annotations"][0]["id"]
    data["annotations"][1]["segmentation"] = []
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(data))
    code = run(["data", "check", "--ann", str(ann), "--images", str(dataset / "train")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("warning: ") and "skipped 1 degenerate annotation" in err[0]
    assert err[1] == f"error: {ann}: annotation id {bad_id}: unknown category_id 999"
    assert len(err) == 2


def test_check_malformed_json(tmp_path, capsys):
    ann = tmp_path / "broken.json"
    ann.write_text('{"images": [}')
    assert run(["data", "check", "--ann", str(ann), "--no-image-check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.json: malformed JSON at line 1, column 13" in err


def test_check_usage_errors(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        run(["data", "check", "--ann", str(tmp_path / "none.json"), "--images", str(tmp_path)])
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(UserError, match="--images DIR is required"):
        run(["data", "check", "--ann", str(tmp_path / "a.json")])
    with pytest.raises(UserError, match="image folder not found"):
        run(["data", "check", "--ann", str(tmp_path / "a.json"), "--images", str(tmp_path / "x")])
    with pytest.raises(UserError):
        run(["data", "synthetic", "--out", str(tmp_path), "--train", "0", "--val", "0"])


def test_data_needs_a_subcommand():
    with pytest.raises(SystemExit):
        parse(["data"])


def test_synthetic_difficulty_level_and_knobs_reach_the_generator(tmp_path):
    assert run(["data", "synthetic", "--out", str(tmp_path), "--train", "3", "--val", "0",
                "--workers", "1", "--difficulty", "easy", "--size", "160", "--objects", "1-2",
                "--textures", "solid,stripes", "--clutter", "light", "--pairs", "0",
                "--crowds", "0.5", "--no-occlusion"]) == 0
    generation = json.loads((tmp_path / "generation.json").read_text())
    assert generation["size"] == 160 and generation["difficulty"] == "custom"
    assert generation["generator"] == {"objects": [1, 2], "object_size": [28.0, 80.0],
                                       "textures": ["solid", "stripes"], "clutter": "light",
                                       "pair_probability": 0.0, "crowd_probability": 0.5,
                                       "occlusion": False}
    info = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())["info"]
    assert info["size"] == 160 and info["generator"] == generation["generator"]


def test_synthetic_knob_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(["data", "synthetic", "--out", str(tmp_path), "--objects", "2-x"])
    assert "expected MIN-MAX (e.g. 2-4), got '2-x'" in capsys.readouterr().err
    with pytest.raises(UserError, match="--object-size: MAX 200 px does not fit a 192 px image"):
        run(["data", "synthetic", "--out", str(tmp_path), "--difficulty", "easy",
             "--object-size", "20-200"])
