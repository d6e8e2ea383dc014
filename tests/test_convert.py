"""Official checkpoints -> rtinst: every official key/shape list (tests/fixtures/
official_checkpoints, read from the official model definitions) as a random state dict,
converted, loaded strictly and run; values where renamed, what changes beyond renaming
(q/k/v split, coordinate-channel order, YOLACT's folded normalisation) checked against the
official computation; refusals name the key and the overrides the checkpoint needs."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtinst.cli import main
from rtinst.config import load_config
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.models.convert import ConversionError, convert_official, load_official_state

FIXTURES = Path(__file__).parent / "fixtures" / "official_checkpoints"
CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs"
# official key list -> (rtinst model, overrides of its coco.yaml that build the same model)
CASES = {
    "sparseinst_r50_giam": ("sparseinst", []),
    "sparseinst_r50_iam": ("sparseinst", ["model.iam_groups=1"]),
    "yolact_r50_550": ("yolact", ["model.backbone.name=resnet50"]),
    "yolact_r101_550": ("yolact", []),
    "fastinst_r50_d3": ("fastinst", []),
    "fastinst_r50_d1": ("fastinst", ["model.decoder_layers=1"]),
}


def keys_of(name: str) -> dict:
    return json.loads((FIXTURES / f"keys_{name}.json").read_text())


def random_official(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the official keys and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in keys_of(name)["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 1000, (), generator=g)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.05
    return out


def cfg_of(model: str, overrides: list[str]):
    return load_config(CONFIGS / model / "coco.yaml", ["model.backbone.pretrained=none", *overrides])


@pytest.fixture(scope="module")
def converted():
    """name -> (official state, conversion, model config); converted once per module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            model, overrides = CASES[name]
            cfg = cfg_of(model, overrides)
            official = random_official(name)
            cache[name] = (official, convert_official(official, model, cfg.model, name), cfg)
        return cache[name]

    return get


def test_fixtures_are_the_six_official_key_lists():
    assert sorted(p.stem.removeprefix("keys_") for p in FIXTURES.glob("keys_*.json")) == sorted(CASES)
    for name in CASES:
        data = keys_of(name)
        assert len(data["state_dict"]) == data["num_state_dict_tensors"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_loads_strictly_and_runs(name, converted):
    official, conv, cfg = converted(name)
    model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == keys_of(name)["num_params"]
    model.load_state_dict(conv.state, strict=True)
    # every official tensor is used once, except the loss buffers FastInst carries twice
    assert set(conv.sources.values()) | set(conv.dropped) == set(official)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 160))
    assert len(out) == 1 and out[0]["mask_probs"].ndim == 3
    assert torch.isfinite(out[0]["scores"]).all()


def test_renamed_tensors_keep_their_values(converted):
    official, conv, _ = converted("sparseinst_r50_giam")
    s = conv.state
    pairs = {  # reversed FPN order, d2 FrozenBN buffers, Group-IAM, heads
        "encoder.fpn.laterals.0.0.weight": "encoder.fpn_laterals.2.weight",
        "encoder.fpn.outputs.2.0.bias": "encoder.fpn_outputs.0.bias",
        "encoder.fpn.top.bottleneck.weight": "encoder.ppm.bottleneck.weight",
        "backbone.stem.0.weight": "backbone.stem.conv1.weight",
        "backbone.res2.0.bn1.running_var": "backbone.res2.0.conv1.norm.running_var",
        "backbone.res5.0.downsample.1.weight": "backbone.res5.0.shortcut.norm.weight",
        "decoder.inst_branch.iam_conv.weight": "decoder.inst_branch.iam_conv.weight",
        "decoder.inst_branch.fc.0.weight": "decoder.inst_branch.fc.weight",
        "decoder.inst_branch.heads.cls_score.bias": "decoder.inst_branch.cls_score.bias",
        "decoder.mask_branch.convs.6.weight": "decoder.mask_branch.mask_convs.6.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(s[ours], official[theirs]), ours
    official, conv, _ = converted("yolact_r101_550")
    s = conv.state
    for ours, theirs in {"fpn.lateral.0.weight": "fpn.lat_layers.2.weight",
                         "fpn.output.2.bias": "fpn.pred_layers.0.bias",
                         "fpn.downsample.1.weight": "fpn.downsample_layers.1.weight",
                         "protonet.convs.1.weight": "proto_net.2.weight",
                         "protonet.up_conv.weight": "proto_net.8.weight",
                         "protonet.out.bias": "proto_net.10.bias",
                         "head.shared.weight": "prediction_layers.0.upfeature.0.weight",
                         "head.cls.weight": "prediction_layers.0.conf_layer.weight",
                         "head.mask.bias": "prediction_layers.0.mask_layer.bias",
                         "semantic.weight": "semantic_seg_conv.weight",
                         "backbone.res4.22.bn3.num_batches_tracked":
                             "backbone.layers.2.22.bn3.num_batches_tracked",
                         "backbone.stem.1.running_var": "backbone.bn1.running_var"}.items():
        assert torch.equal(s[ours], official[theirs]), ours
    official, conv, _ = converted("fastinst_r50_d3")
    s = conv.state
    p = "sem_seg_head.predictor."
    for ours, theirs in {"pixel_decoder.laterals.0.0.weight": "sem_seg_head.pixel_decoder.adapter_1.weight",
                         "pixel_decoder.outputs.2.1.bias": "sem_seg_head.pixel_decoder.layer_3.norm.bias",
                         "pixel_decoder.top.stages.3.1.weight": "sem_seg_head.pixel_decoder.ppm.stages.3.1.weight",
                         "aux_pos.weight": p + "empty_query_pos_embed.weight",
                         "query_proposal.classifier.weight": p + "query_proposal.conv_proposal_cls_logits.2.weight",
                         "layers.2.pixel_norm2.weight": p + "transformer_mask_ffn_layers.2.norm.weight",
                         "layers.0.query_norm2.bias": p + "transformer_query_self_attention_layers.0.norm.bias",
                         "layers.1.query_ffn.linear2.weight": p + "transformer_query_ffn_layers.1.linear2.weight",
                         "heads.3.class_mlp.layers.2.bias": p + "class_embed_layers.3.layers.2.bias",
                         "heads.0.pixel_proj.weight": p + "mask_features_layers.0.weight"}.items():
        assert torch.equal(s[ours], official[theirs]), ours
    assert torch.equal(s["pos_embedding.grid.weight"], official[p + "meta_pos_embed"][0])


def test_packed_attention_split_computes_the_official_attention(converted):
    official, conv, _ = converted("fastinst_r50_d3")
    base = "sem_seg_head.predictor.transformer_query_self_attention_layers.1.self_attn."
    w = official[base + "in_proj_weight"]
    assert torch.equal(conv.state["layers.1.query_self_attn.k_proj.weight"], w[256:512])
    assert torch.equal(conv.state["layers.1.query_self_attn.v_proj.bias"],
                       official[base + "in_proj_bias"][512:])
    mha = nn.MultiheadAttention(256, 8)
    mha.load_state_dict({k.removeprefix(base): v for k, v in official.items() if k.startswith(base)})
    from rtinst.models.transformer import Attention

    ours = Attention(256, 8)
    ours.load_state_dict({k.removeprefix("layers.1.query_self_attn."): v for k, v in conv.state.items()
                          if k.startswith("layers.1.query_self_attn.")})
    q, k = torch.randn(5, 1, 256), torch.randn(7, 1, 256)
    expected = mha(q, k, k, need_weights=False)[0]
    got = ours(q.transpose(0, 1), k.transpose(0, 1), k.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_coordinate_channels_move_from_first_to_last(converted):
    official, conv, _ = converted("sparseinst_r50_iam")
    theirs = official["decoder.mask_branch.mask_convs.0.weight"]
    ours = conv.state["decoder.mask_branch.convs.0.weight"]
    assert torch.equal(ours[:, -2:], theirs[:, :2]) and torch.equal(ours[:, :-2], theirs[:, 2:])
    from rtinst.models.sparseinst import coordinate_features

    feats = torch.randn(1, 256, 6, 8)
    coords = coordinate_features(feats)
    expected = F.conv2d(torch.cat([coords, feats], 1), theirs, padding=1)  # official order
    got = F.conv2d(torch.cat([feats, coords], 1), ours, padding=1)  # rtinst's order
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_yolact_stem_folds_the_official_normalisation(converted):
    from rtinst.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from rtinst.models.convert.yolact import OFFICIAL_MEAN, OFFICIAL_STD

    official, conv, _ = converted("yolact_r50_550")
    image = torch.rand(1, 3, 40, 48) * 255
    mean_o, std_o = torch.tensor(OFFICIAL_MEAN).view(1, 3, 1, 1), torch.tensor(OFFICIAL_STD).view(1, 3, 1, 1)
    mean_r, std_r = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def stem(x, w, prefix, state):
        y = F.conv2d(x, w, stride=2, padding=3)
        return F.batch_norm(y, state[prefix + "running_mean"], state[prefix + "running_var"],
                            state[prefix + "weight"], state[prefix + "bias"], False)

    expected = stem((image - mean_o) / std_o, official["backbone.conv1.weight"], "backbone.bn1.", official)
    got = stem((image - mean_r) / std_r, conv.state["backbone.stem.0.weight"], "backbone.stem.1.", conv.state)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # the 7x7 padding reaches 2 cells in
    torch.testing.assert_close(got[inner], expected[inner], rtol=1e-4, atol=1e-4)
    assert not torch.equal(conv.state["backbone.stem.0.weight"], official["backbone.conv1.weight"])


def _refusal(name: str, official: dict, overrides: list[str]) -> str:
    model, base = CASES[name]
    with pytest.raises(ConversionError) as e:
        convert_official(official, model, cfg_of(model, base + overrides).model, name)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_refuses_a_key_it_cannot_map():
    official = random_official("sparseinst_r50_iam")
    official["decoder.inst_branch.extra.weight"] = torch.zeros(3)
    msg = _refusal("sparseinst_r50_iam", official, [])
    assert "cannot map checkpoint key 'decoder.inst_branch.extra.weight'" in msg


def test_refuses_a_missing_key():
    official = random_official("yolact_r50_550")
    del official["proto_net.8.bias"]
    msg = _refusal("yolact_r50_550", official, [])
    assert "checkpoint lacks 'proto_net.8.bias' (for rtinst 'protonet.up_conv.bias')" in msg


def test_refuses_other_num_classes_and_names_the_config():
    msg = _refusal("sparseinst_r50_giam", random_official("sparseinst_r50_giam"), ["model.num_classes=10"])
    assert "'decoder.inst_branch.cls_score.weight' has shape [80, 1024]" in msg
    assert msg.endswith("checkpoint has 80 classes: use -o model.num_classes=80")


def test_refuses_other_decoder_depth_and_names_the_config():
    msg = _refusal("fastinst_r50_d3", random_official("fastinst_r50_d3"), ["model.decoder_layers=1"])
    assert "transformer_query_cross_attention_layers.1" in msg
    assert msg.endswith("checkpoint has 3 decoder layers: use -o model.decoder_layers=3")
    msg = _refusal("fastinst_r50_d1", random_official("fastinst_r50_d1"), ["model.decoder_layers=3"])
    assert msg.endswith("checkpoint has 1 decoder layer: use -o model.decoder_layers=1")
    msg = _refusal("sparseinst_r50_giam", random_official("sparseinst_r50_giam"), ["model.iam_groups=1"])
    assert "'decoder.inst_branch.fc.weight'" in msg and "-o model.iam_groups=4" in msg


def test_refuses_another_models_checkpoint():
    cfg = cfg_of("fastinst", [])
    with pytest.raises(ConversionError, match="use --from sparseinst"):
        convert_official(random_official("sparseinst_r50_iam"), "fastinst", cfg.model, "ckpt")
    with pytest.raises(ConversionError, match="--from yolact but the config builds model.name='fastinst'"):
        convert_official(random_official("yolact_r50_550"), "yolact", cfg.model, "ckpt")


def test_pkl_goes_through_the_arrays_only_unpickler(tmp_path):
    official = random_official("sparseinst_r50_iam")
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in official.items()},
                                   "__author__": "d2"}, protocol=2))
    loaded = load_official_state(path)
    assert loaded.keys() == official.keys()
    assert all(torch.equal(loaded[k], official[k]) for k in official)

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": {"x": Evil()}}))
    with pytest.raises(ConversionError, match=r"evil.pkl: cannot read checkpoint .*refusing to load"):
        load_official_state(bad)
    assert not marker.exists()


def test_pth_reads_the_d2_wrapper_and_refuses_code(tmp_path):
    official = {"backbone.stem.conv1.weight": torch.randn(2, 3, 1, 1)}
    path = tmp_path / "model_final.pth"
    torch.save({"model": official, "iteration": 5, "scheduler": {}}, path)
    assert load_official_state(path).keys() == official.keys()
    torch.save({"model": {"x": np.float64}}, tmp_path / "code.pth")  # a global, not a tensor
    with pytest.raises(ConversionError, match="code.pth: cannot read checkpoint"):
        load_official_state(tmp_path / "code.pth")
    with pytest.raises(ConversionError, match="checkpoint not found"):
        load_official_state(tmp_path / "missing.pth")


def test_cli_convert_writes_a_checkpoint_that_evaluate_loads(tmp_path, capsys):
    from rtinst.engine.checkpoint import load_checkpoint
    from rtinst.engine.checkpoint_eval import model_from_checkpoint

    official = random_official("sparseinst_r50_iam", seed=3)
    src = tmp_path / "sparse_inst_r50_base.pth"
    torch.save({"model": official, "iteration": 1}, src)
    out = tmp_path / "converted.pt"
    config = str(CONFIGS / "sparseinst" / "coco.yaml")
    # the backbone's ImageNet file is never read (pretrained=none is implied): a path that
    # does not exist would fail the build if it were
    nowhere = "model.backbone.pretrained=/nonexistent/resnet50.pth"
    args = ["convert", str(src), "--from", "sparseinst", "--config", config, "-o", nowhere,
            "-o", "model.iam_groups=1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "315 tensors -> 315 rtinst tensors" in printed and "x, y input channels" in printed
    state = load_checkpoint(out)
    assert state["converted_from"]["overrides"] == [nowhere, "model.iam_groups=1"]
    assert state["converted_from"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    cfg = load_config(config, [nowhere, "model.iam_groups=1"])
    model, _ = model_from_checkpoint(cfg, out)
    assert torch.equal(model.state_dict()["decoder.inst_branch.iam_conv.weight"],
                       official["decoder.inst_branch.iam_conv.weight"])
    # the wrong config: one line naming the key and the overrides it was made with
    assert main(args[:-4] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint lacks 'decoder.inst_branch.fc.weight'" in err
    with pytest.raises(UserError, match="converted with overrides .*'model.iam_groups=1'"):
        model_from_checkpoint(load_config(config), out)
