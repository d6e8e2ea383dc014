"""Relative paths resolve against the repository root from any folder (a notebook's kernel
starts in the notebook's own folder); papermill's string parameters are parsed."""

from pathlib import Path

import pytest

from rtinst import paths
from rtinst.errors import UserError
from rtinst.harness.params import parse_overrides
from rtinst.harness.specs import find_spec
from rtinst.harness.table_spec import resolve_base_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The current folder is not the repository (as for a kernel in notebooks/yolact/)."""
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_relative_paths_resolve_against_the_checkout_not_the_cwd(elsewhere):
    assert paths.checkout_root() == REPO
    assert paths.resolve("results/runs") == REPO / "results" / "runs"
    assert paths.resolve(elsewhere / "x") == elsewhere / "x"  # absolute: kept
    assert paths.display(REPO / "results" / "runs") == "results/runs"
    assert paths.display(elsewhere / "x") == str(elsewhere / "x")


def test_rtinst_home_overrides_the_root(elsewhere, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(elsewhere / "home"))
    assert paths.resolve("results/runs") == elsewhere / "home" / "results" / "runs"


def test_outside_a_checkout_the_cwd_is_the_base(elsewhere, monkeypatch):
    monkeypatch.setattr(paths, "PACKAGE_DIR", elsewhere / "site-packages" / "rtinst")
    assert paths.checkout_root() is None
    assert paths.resolve("data") == elsewhere / "data"


@pytest.mark.parametrize("name", ["yolact/table2a_fast_nms", "yolact/table2a",
                                  "experiments/yolact/table2a_fast_nms.yaml",
                                  "experiments/yolact/table2a_fast_nms",
                                  str(REPO / "experiments/yolact/table2a_fast_nms.yaml")])
def test_find_spec_by_any_of_its_names_from_another_folder(elsewhere, name):
    assert find_spec(name) == REPO / "experiments" / "yolact" / "table2a_fast_nms.yaml"


def test_find_spec_takes_a_spec_file_in_the_current_folder(elsewhere):
    (elsewhere / "mine.yaml").write_text("paper: own\n")
    assert find_spec("mine.yaml").resolve() == elsewhere / "mine.yaml"


def test_base_configs_resolve_from_another_folder(elsewhere):
    assert resolve_base_config("rtinst/configs/{model}/{preset}.yaml", "yolact", "tiny") == \
        REPO / "rtinst" / "configs" / "yolact" / "tiny.yaml"
    assert resolve_base_config("my/{model}.yaml", "yolact", "tiny") == REPO / "my" / "yolact.yaml"


def test_data_root_resolves_against_the_root(elsewhere):
    from rtinst.config_schema import DataConfig
    from rtinst.data.build import split_paths

    ann, images = split_paths(DataConfig(root="data/synthetic"), "val")
    assert ann.is_relative_to(REPO / "data" / "synthetic")
    assert images.is_relative_to(REPO / "data" / "synthetic")


@pytest.mark.parametrize("value, expected", [
    ("train.max_iters=6", ["train.max_iters=6"]),
    ("train.max_iters=6,train.lr=1e-4", ["train.max_iters=6", "train.lr=1e-4"]),
    ("train.max_iters=6; train.lr=1e-4", ["train.max_iters=6", "train.lr=1e-4"]),
    ("data.train_short_edge=[320, 352],train.max_iters=6",
     ["data.train_short_edge=[320, 352]", "train.max_iters=6"]),
    ("model.name=a,b", ["model.name=a,b"]),  # a comma not followed by key= is the value's
    (["train.max_iters=6", " train.lr=1e-4 "], ["train.max_iters=6", "train.lr=1e-4"]),
    ("", []), (None, []), ([], []),
])
def test_overrides_as_a_string_or_a_list(value, expected):
    assert parse_overrides(value) == expected


def test_overrides_that_are_not_key_value_are_an_error():
    with pytest.raises(UserError, match=r"'train' is not KEY=VALUE"):
        parse_overrides("train")
    with pytest.raises(UserError, match="expected KEY=VALUE strings"):
        parse_overrides([6])
