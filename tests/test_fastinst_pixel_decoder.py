"""FastInst's (PPM-)FPN pixel decoder follows the official top-down path; its fix re-keys
every FastInst run and no other model's.

The official decoder (and REFERENCE_FACTS) passes each level's *output-conv result* down,
bilinearly upsampled; laterals are 1x1 conv + GroupNorm without ReLU. The earlier revision
passed the pre-output sum down, so E5's output conv got no gradient (and DDP failed).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtinst.config import ConfigError, load_config
from rtinst.records import config_hash
from rtinst.models import build_model
from rtinst.models.necks import PPM
from rtinst.models.pixel_decoders import TopDownFPN, build_pixel_decoder

REPO = Path(__file__).resolve().parents[1]
CHANNELS = [16, 24, 32]


def features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, 20 // s, 28 // s, generator=g) for c, s in zip(CHANNELS, [1, 2, 4])]


@pytest.mark.parametrize("kind", ["fpn", "ppm_fpn", "transformer_encoder"])
def test_top_down_passes_the_output_conv_result_bilinearly(kind):
    torch.manual_seed(0)
    dec = build_pixel_decoder(kind, CHANNELS, 32, 4, 64, 1).eval()
    c3, c4, c5 = features()
    lat, out = dec.laterals, dec.outputs

    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    e5 = out[2](dec.top(lat[2](c5)))
    e4 = out[1](lat[1](c4) + up(e5, c4))
    e3 = out[0](lat[0](c3) + up(e4, c3))
    got = dec([c3, c4, c5])
    for name, a, b in zip(("E3", "E4", "E5"), got, (e3, e4, e5)):
        torch.testing.assert_close(a, b, msg=name)
    assert isinstance(dec.top, PPM) == (kind == "ppm_fpn")


def test_laterals_have_groupnorm_and_no_relu_outputs_have_both():
    dec = TopDownFPN(CHANNELS, 32)
    for lateral in dec.laterals:
        assert [type(m) for m in lateral] == [nn.Conv2d, nn.GroupNorm]
        assert lateral[0].bias is None  # the norm's bias replaces it
    for output in dec.outputs:
        assert [type(m) for m in output] == [nn.Conv2d, nn.GroupNorm, nn.ReLU]
    lateral = dec.laterals[0](features()[0])
    assert (lateral < 0).float().mean() > 0.2  # a ReLU would clip these


def test_every_output_conv_gets_a_gradient_through_e3():
    torch.manual_seed(0)
    dec = build_pixel_decoder("ppm_fpn", CHANNELS, 32)
    e3, _, _ = dec(features())
    e3.square().mean().backward()  # only E3 is used, as by zero/learnable queries
    for name, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _coco_model(*overrides: str):
    cfg = load_config(REPO / "rtinst/configs/fastinst/coco.yaml",
                      ["model.backbone.pretrained=none", *overrides])
    with torch.device("meta"):  # shapes only: no init cost
        return build_model(cfg.model)


def test_paper_scale_parameters_equal_the_official_models():
    # The official models' parameter counts and pixel-decoder shapes, read from the released
    # code (official checkpoints' key listings): D3 34,176,597, D1 29,658,035; adapter_i
    # (our laterals.i-1) conv without bias + GN, layer_i (our outputs.i-1) 3x3 conv + GN,
    # ppm (our top) 1x1 convs with bias.
    for overrides, official in (((), 34_176_597), (("model.decoder_layers=1",), 29_658_035)):
        model = _coco_model(*overrides)
        assert sum(p.numel() for p in model.parameters()) == official, overrides
    expected = {}
    for i, cin in enumerate((512, 1024, 2048)):
        expected |= {f"laterals.{i}.0.weight": [256, cin, 1, 1], f"laterals.{i}.1.weight": [256],
                     f"laterals.{i}.1.bias": [256], f"outputs.{i}.0.weight": [256, 256, 3, 3],
                     f"outputs.{i}.1.weight": [256], f"outputs.{i}.1.bias": [256]}
    for i in range(4):
        expected |= {f"top.stages.{i}.1.weight": [64, 256, 1, 1], f"top.stages.{i}.1.bias": [64]}
    expected |= {"top.bottleneck.weight": [256, 512, 1, 1], "top.bottleneck.bias": [256]}
    ours = {k: list(v.shape) for k, v in model.pixel_decoder.state_dict().items()}
    assert ours == expected


def _tiny_row_runs() -> dict[str, list[tuple[str, Path]]]:
    """model -> [(row, its run folder at the tiny preset)] over every implemented table row."""
    from rtinst.records import run_dir_for
    from rtinst.harness.specs import load_specs
    from rtinst.harness.table_spec import row_config, trained_row

    out: dict[str, list[tuple[str, Path]]] = {}
    for spec in load_specs(presets=("tiny",)):
        for row in spec.implemented_rows:
            cfg = row_config(spec, trained_row(spec, row), "tiny")
            out.setdefault(cfg.model.name, []).append(
                (f"{spec.id}: {row.label}", run_dir_for(cfg, REPO / "results/runs")))
    return out


ARCHIVE = REPO / "results" / "archive"


def test_decoder_fix_re_keys_fastinst_runs_only():
    # Its map of old -> new run names moved to the archive with the old records: every old
    # FastInst run it names was archived because its own config now hashes elsewhere; no
    # SparseInst or YOLACT run is in it, and no current FastInst row finds an old record.
    import pandas as pd

    tiny = json.loads((ARCHIVE / "rehashed_pixel_decoder_rev2.json").read_text())["rows"]["tiny"]
    assert tiny
    for row, names in tiny.items():
        assert row.startswith("fastinst/"), row
        assert all(n.startswith("fastinst-tiny-") for n in names.values()), row
        assert names["old"] != names["new"], row
    index = pd.read_csv(ARCHIVE / "INDEX.csv").set_index("run")
    for old in sorted({names["old"] for names in tiny.values()}):
        assert index.loc[old, "reason"] == "hash mismatch", old
        run = ARCHIVE / "runs" / old
        assert "pixel_decoder_revision" not in (run / "config.yaml").read_text(), old  # revision 1
        recorded = json.loads((run / "record.json").read_text())["config_hash"]
        assert old.endswith(recorded) and config_hash(load_config(run / "config.yaml")) != recorded, old
    # The revision is a FastInst field: no other model's config can carry it, so no other
    # model's hash moved with it (archived SparseInst / YOLACT runs left for other reasons).
    for model in ("sparseinst", "yolact"):
        with pytest.raises(ConfigError, match="pixel_decoder_revision"):
            load_config(REPO / f"rtinst/configs/{model}/tiny.yaml", ["model.pixel_decoder_revision=2"])
    runs = _tiny_row_runs()
    old_names = {names["old"] for names in tiny.values()}
    assert not old_names & {d.name for _, d in runs["fastinst"]}  # every FastInst hash changed
    for row, d in runs["fastinst"]:  # the FastInst runs recorded since: trained with revision 2
        if (d / "config.yaml").is_file():
            assert "pixel_decoder_revision: 2" in (d / "config.yaml").read_text(), row
