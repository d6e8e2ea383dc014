"""Config system: YAML in/out, dotted overrides, errors naming keys, stable hash."""

import subprocess
import sys

import pytest

from rtinst.config import (ConfigError, apply_overrides, from_dict, load_config, parse_override,
                           save_config, to_dict, to_yaml)
from rtinst.config_schema import FastInstConfig, RunConfig, SparseInstConfig, YolactConfig
from rtinst.records import config_hash


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_model_union(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, RunConfig) and isinstance(cfg.model, SparseInstConfig)
    p = write(tmp_path, "f.yaml", "model:\n  name: fastinst\n  decoder_layers: 1\n")
    cfg = load_config(p)
    assert isinstance(cfg.model, FastInstConfig)
    assert cfg.model.decoder_layers == 1
    assert cfg.model.num_ia_queries == 100  # default kept
    y = load_config(overrides=["model.name=yolact", "model.num_prototypes=16"])
    assert isinstance(y, RunConfig) and isinstance(y.model, YolactConfig)
    assert y.model.num_prototypes == 16
    assert y.model.backbone.name == "resnet101"  # YOLACT's paper default


def test_dotted_overrides_parse_yaml_values(tmp_path):
    p = write(tmp_path, "f.yaml", "model: {name: fastinst}\n")
    cfg = load_config(p, ["model.decoder_layers=6", "train.lr=2e-4", "train.clip_grad_norm=null",
                          "model.backbone.dcn_stages=[3, 4, 5]", "eval.tide=false"])
    assert cfg.model.decoder_layers == 6
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.train.clip_grad_norm is None
    assert cfg.model.backbone.dcn_stages == [3, 4, 5]
    assert cfg.eval.tide is False
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


def test_unknown_key_names_closest_valid_key(tmp_path):
    p = write(tmp_path, "f.yaml", "model: {name: fastinst}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["model.decoder_layer=1"])
    msg = str(e.value)
    assert "model.decoder_layer'" in msg and "did you mean 'model.decoder_layers'" in msg
    assert str(p) in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        from_dict({"train": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match="unknown key 'modle'.*did you mean 'model'"):
        from_dict({"modle": {}})
    # nothing close: the message lists what is valid instead
    with pytest.raises(ConfigError, match=r"unknown key 'train.zzz'; valid keys: .*\bbatch_size\b.*\blr\b"):
        from_dict({"train": {"zzz": 1}})


@pytest.mark.parametrize("override, expected", [
    ("model.decoder_layers=-1", r"model.decoder_layers: invalid value -1; must be >= 0"),
    ("model.query_type=random", r"model.query_type: invalid value 'random'; allowed values: "
                                r"'zero', 'learnable', 'resize', 'ia_guided'"),
    ("model.decoder_layers=1.5", r"model.decoder_layers: expected an integer"),
    ("model.gt_mask_guidance=yes please", r"model.gt_mask_guidance: expected true or false"),
    ("model.backbone.name=vgg", r"model.backbone.name: invalid value 'vgg'"),
    ("model.name=detr", r"model.name: invalid value 'detr'; allowed values: 'yolact'"),
    ("data.train_short_edge=[416, -1]", r"data.train_short_edge: invalid value -1; must be >= 1"),
    ("train", r"expected key=value"),
])
def test_bad_values_name_key_and_allowed_values(tmp_path, override, expected):
    p = write(tmp_path, "f.yaml", "model: {name: fastinst}\n")
    with pytest.raises(ConfigError, match=expected):
        load_config(p, [override])


def test_yaml_round_trip_and_hash_stability(tmp_path):
    cfg = load_config(overrides=["model.name=fastinst", "model.decoder_layers=1", "seed=3"])
    path = tmp_path / "out.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)
    # Same values spelled differently -> same hash; float 1 vs 1.0 too.
    a = load_config(overrides=["train.lr=1", "model.name=sparseinst"])
    b = from_dict({"train": {"lr": 1.0}})
    assert config_hash(a) == config_hash(b)


def test_hash_changes_with_semantics_not_with_bookkeeping():
    base = load_config()
    assert config_hash(load_config(overrides=["model.decoder_depth=6"])) != config_hash(base)
    assert config_hash(load_config(overrides=["seed=1"])) != config_hash(base)
    # Worker count, device and output folder do not change what a run computes.
    assert config_hash(load_config(overrides=["data.num_workers=0", "device=cpu",
                                              "output_dir=/tmp/x"])) == config_hash(base)
    assert len(config_hash(base)) == 12


def test_base_inheritance_and_errors(tmp_path):
    write(tmp_path, "base.yaml", "model:\n  name: fastinst\n  decoder_layers: 3\ntrain: {lr: 0.001}\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\nmodel: {decoder_layers: 1}\n")
    cfg = load_config(child)
    assert cfg.model.decoder_layers == 1 and cfg.train.lr == pytest.approx(1e-3)
    loop = write(tmp_path, "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path, "bad.yaml", "model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML \(line"):
        load_config(bad)


def test_override_into_value_is_an_error():
    with pytest.raises(ConfigError, match="'seed' is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_to_yaml_uses_safe_plain_types():
    text = to_yaml(load_config())
    assert "!!python" not in text


def test_cli_config_show(tmp_path):
    p = write(tmp_path, "f.yaml", "model: {name: fastinst}\n")
    run = subprocess.run([sys.executable, "-m", "rtinst", "config", "show", str(p),
                          "-o", "model.decoder_layers=1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "# config hash: " in run.stdout and "decoder_layers: 1" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "rtinst", "config", "show", str(p),
                          "-o", "model.decoder_layer=1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0  # one line, no traceback
    assert bad.stderr.startswith("error: ") and "did you mean 'model.decoder_layers'" in bad.stderr


def test_config_hash_follows_the_backbone_weights_file(tmp_path):
    from rtinst.config import load_config
    from rtinst.models.backbones import backbone_init_identity

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights A")
    b.write_bytes(b"weights B")
    cfg = lambda p: load_config(overrides=[f"model.backbone.pretrained={p}"])  # noqa: E731
    assert backbone_init_identity(cfg("none").model.backbone) == "scratch"
    assert backbone_init_identity(cfg(tmp_path / "missing.pt").model.backbone) == "scratch"
    h_a, h_b = config_hash(cfg(a)), config_hash(cfg(b))
    assert h_a != h_b  # different initial weights: different runs
    b.write_bytes(b"weights A")  # rewritten weights: new runs, not the cached ones
    assert config_hash(cfg(b)) != h_b
    assert backbone_init_identity(cfg(b).model.backbone) == backbone_init_identity(cfg(a).model.backbone)
