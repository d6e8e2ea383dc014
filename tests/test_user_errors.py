"""Errors that point at the right place, before any training: the spec file:line of a bad
override or model name, "file not found" for a missing spec path, --gpus without GPUs under
--dry-run, broken data failing a sweep once, and `rtinst records list` columns."""

import json
import shutil
from pathlib import Path

import pytest

from rtinst.cli import main
from rtinst.errors import UserError
from rtinst.harness.specs import SpecError, find_spec, load_spec

REPO = Path(__file__).resolve().parents[1]
OWN = REPO / "experiments/examples/yolact_fpn_width.yaml"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_override_typo_names_spec_line_and_key_not_the_plot(tmp_path):
    text = OWN.read_text().replace("model.fpn_channels=128", "model.fpn_chanels=128")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "s.yaml", presets=("tiny",))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 's.yaml'}:{_line_of(text, 'fpn_chanels')}: row 'FPN 128': "
                          "override 'model.fpn_chanels=128': unknown key 'model.fpn_chanels'")
    assert "did you mean 'model.fpn_channels'" in msg and "plot" not in msg


def test_spec_wide_override_typo_points_at_its_line(tmp_path):
    text = OWN.read_text().replace("cost_input_size: [550, 550]",
                                   "cost_input_size: [550, 550]\noverrides:\n  - train.lrr=0.1")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError, match=rf"s\.yaml:{_line_of(text, 'train.lrr')}: .*override 'train.lrr=0.1'"):
        load_spec(tmp_path / "s.yaml", presets=("tiny",))


def test_misspelled_model_is_a_model_error(tmp_path):
    text = OWN.read_text().replace("model: yolact", "model: yolactt")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "s.yaml", presets=("tiny",))
    assert str(e.value) == (f"{tmp_path / 's.yaml'}:{_line_of(text, 'model: yolactt')}: "
                            "unknown model 'yolactt'; did you mean 'yolact'?")


def test_plot_key_not_set_is_still_reported_as_plot(tmp_path):
    text = OWN.read_text().replace("x: model.fpn_channels", "x: model.proto_channels")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError, match=r"s\.yaml:\d+: row 'FPN 32': plot.x 'model.proto_channels'"):
        load_spec(tmp_path / "s.yaml", presets=("tiny",))


def test_missing_spec_path_is_file_not_found(tmp_path):
    with pytest.raises(SpecError) as e:
        find_spec(str(tmp_path / "nope.yaml"))
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: spec file not found"
    with pytest.raises(SpecError, match="unknown spec 'fastinst/table99'"):
        find_spec("fastinst/table99")  # a name, not a path: still the list of names


def test_gpus_without_gpus_fails_dry_run(capsys):
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has 2 GPUs")
    rc = main(["sweep", "examples/yolact_fpn_width", "--dry-run", "--gpus", "2"])
    err = capsys.readouterr().err
    assert rc != 0 and "--gpus 2: this machine has" in err and "GPU(s)" in err


def test_broken_data_fails_the_sweep_once_before_training(tmp_path, monkeypatch, capsys):
    from rtinst.harness import runner, sweep

    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        (root / f"annotations/instances_{split}.json").write_text("{not json")
    started = []
    monkeypatch.setattr(runner, "execute_run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(sweep, "execute_run", lambda *a, **k: started.append(a))
    rc = main(["sweep", "examples/yolact_fpn_width", "--preset", "smoke", "--executor", "inline",
               "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"),
               "--data-root", str(root), "--override", "data.dataset=coco", "--cost-preset", "none",
               "--no-notebook"])
    err = capsys.readouterr().err
    assert rc != 0 and not started
    lines = [line for line in err.splitlines() if "malformed JSON" in line]
    assert len(lines) == 1 and "3 run(s) not started" in lines[0], err


def _record(run_dir: Path, h: str, error: str | None = None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps({
        "config_hash": h, "status": "failed" if error else "done", "error": error,
        "wall_time_s": 12.5, "metrics": {"ap": 1.234, "ap50": 3.0, "ap75": 0.5},
        "config": {"model": {"name": "fastinst", "decoder_layers": 3}, "preset": "tiny", "seed": 0,
                   "train": {"lr": 0.0001, "max_iters": 100}},
        "provenance": {"hardware": "cpu " * 40, "git_commit": "a" * 40}}))


def test_records_list_default_fits_120_and_columns_select(tmp_path, capsys):
    _record(tmp_path / "r1", "aaaaaaaaaaaa")
    _record(tmp_path / "r2", "bbbbbbbbbbbb", error="RuntimeError: " + "x" * 300)
    assert main(["records", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(map(len, out)) <= 120 and "config_hash" in out[0] and "ap" in out[0].split()
    assert main(["records", "list", str(tmp_path), "--columns", "config_hash,ap75"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["config_hash", "ap75"] and "0.50" in out[1]
    assert main(["records", "list", str(tmp_path), "--columns", "config_hash,stauts"]) != 0
    assert "--columns: unknown column 'stauts'; did you mean 'status'?" in capsys.readouterr().err
