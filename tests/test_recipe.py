"""`rtinst config recipe`: each coco preset beside its model's official recipe."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rtinst.config import load_config
from rtinst.recipe import (ACCEPTED, DIFF, MISSING, NOT_IN_BUILD, OK, OFFICIAL_RECIPES, RecipeError,
                           check_recipe, load_official, resolve, same)

REPO = Path(__file__).resolve().parents[1]
MODELS = ("fastinst", "sparseinst", "yolact")


def coco(model: str, *overrides: str):
    return load_config(REPO / "rtinst" / "configs" / model / "coco.yaml", list(overrides))


def status(lines, key):
    (line,) = [ln for ln in lines if ln.key == key]
    return line.status


@pytest.mark.parametrize("model", MODELS)
def test_each_coco_preset_matches_its_official_recipe_or_records_why_not(model):
    lines = check_recipe(coco(model))
    assert [ln.key for ln in lines if ln.status == DIFF] == []
    assert len(lines) == len(load_official()[model]) >= 30
    for ln in lines:
        assert ln.source and (ln.status != ACCEPTED or ln.reason)


@pytest.mark.parametrize("model", MODELS)
def test_every_official_key_exists_in_the_config_schema_or_is_marked_optional(model):
    cfg = coco(model)
    for key, entry in load_official()[model].items():
        present = resolve(cfg, key) is not MISSING
        assert present or entry.get("optional"), f"{model}.{key} is no config key"


@pytest.mark.parametrize("model, override, key", [
    ("fastinst", "train.lr=2e-4", "train.lr"),
    ("fastinst", "train.steps=[0.8, 0.95]", "train.steps"),  # neither official nor the recorded 0.9/0.95
    ("fastinst", "model.backbone.frozen_bn=false", "model.backbone.frozen_bn"),
    ("fastinst", "data.crop_prob=0.0", "data.crop_prob"),
    ("sparseinst", "model.matcher_alpha=0.5", "model.matcher_alpha"),
    ("sparseinst", "data.train_short_edge=[480, 640]", "data.train_short_edge"),
    ("yolact", "model.crowd_iou_threshold=0.5", "model.crowd_iou_threshold"),
    ("yolact", "data.expand=false", "data.expand"),
    ("yolact", "train.warmup_iters=1000", "train.warmup_iters"),
])
def test_a_mutated_preset_is_flagged(model, override, key):
    assert status(check_recipe(coco(model)), key) in (OK, ACCEPTED)
    assert status(check_recipe(coco(model, override)), key) == DIFF


def test_steps_compare_as_iterations():
    assert status(check_recipe(coco("fastinst")), "train.steps") == OK  # 327778 / 355092
    lines = check_recipe(coco("fastinst", "train.steps=[0.9, 0.95]"))  # the paper's fractions
    (steps,) = [ln for ln in lines if ln.key == "train.steps"]
    assert steps.status == DIFF and steps.ours == [331875, 350312]  # 0.9, 0.95 of 368750
    assert status(check_recipe(coco("yolact", "model.square_anchors=false")), "model.square_anchors") == DIFF


def test_value_comparison():
    assert same(1e-4, 0.0001) and same([416, 640], [416.0, 640.0]) and same(None, None)
    assert not same(True, 1) and not same([1, 2], [1, 2, 3]) and not same(0.05, 0.0505)


def write_official(tmp_path, section: dict) -> Path:
    path = tmp_path / "official.yaml"
    path.write_text(yaml.safe_dump({"fastinst": section}, sort_keys=False))
    return path


def test_a_field_newer_builds_have_is_reported_not_crashed_on(tmp_path):
    path = write_official(tmp_path, {
        "train.lr": {"value": 1e-4, "source": "s"},
        "model.added_later": {"value": 2, "source": "s", "optional": True},
    })
    lines = check_recipe(coco("fastinst"), path=path)
    assert [ln.status for ln in lines] == [OK, NOT_IN_BUILD]


@pytest.mark.parametrize("section, message", [
    ({"model.decoder_layer": {"value": 3, "source": "s"}}, "fastinst.model.decoder_layer: no such config key"),
    ({"train.lr": {"value": 1e-4}}, r"train.lr: expected \{value: ..., source: ...\}"),
    ({"train.lr": {"value": 1e-4, "source": "s", "deviation": "why"}}, "deviation must be"),
    ({"train.lr": {"value": 1e-4, "source": "s", "note": 1}}, "unknown field"),
])
def test_a_malformed_official_file_is_a_one_line_error_naming_the_key(tmp_path, section, message):
    path = write_official(tmp_path, section)
    with pytest.raises(RecipeError, match=message):
        check_recipe(coco("fastinst"), path=path)


def test_cli_exit_status_marks_and_sources():
    def recipe(*args):
        return subprocess.run([sys.executable, "-m", "rtinst", "config", "recipe", *args],
                              capture_output=True, text=True, cwd=REPO)

    good = recipe("rtinst/configs/yolact/coco.yaml")
    assert good.returncode == 0, good.stderr
    lines = {ln.split()[0]: ln for ln in good.stdout.splitlines() if not ln.startswith("#")}
    assert len(lines) == len(load_official(OFFICIAL_RECIPES)["yolact"])
    assert "[ok]" in lines["train.lr"] and "REFERENCE_FACTS: YOLACT solver" in lines["train.lr"]
    assert "[ok]" in lines["model.crowd_iou_threshold"]
    assert "[accepted: the official 4/550" in lines["data.min_box_size"]
    assert "0 unrecorded difference(s)" in good.stdout
    bad = recipe("rtinst/configs/yolact/coco.yaml", "-o", "train.lr=2e-3")
    assert bad.returncode == 1
    assert "[DIFF]" in next(ln for ln in bad.stdout.splitlines() if ln.startswith("train.lr "))
    assert "1 unrecorded difference(s): train.lr" in bad.stdout
    tiny = recipe("rtinst/configs/fastinst/tiny.yaml")
    assert tiny.returncode == 1 and "[DIFF]" in tiny.stdout
