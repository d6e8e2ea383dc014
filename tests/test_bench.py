"""FLOPs / params / latency benchmarking: hand-computed counts and record sanity."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from rtinst.cli import bench as cli_bench
from rtinst.engine.flops import count_flops, count_params
from rtinst.engine.latency import measure_latency, module_breakdown
from rtinst.errors import UserError

# ------------------------------------------------------------------- hand-computed FLOPs


def test_conv2d_counts_macs_without_bias():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    expected = (8 * 10 * 12) * (3 * 3 * 3)  # output elements x (Cin * kh * kw)
    for convention in ("detectron2", "fvcore"):
        report = count_flops(conv, torch.randn(1, 3, 10, 12), convention=convention)
        assert report.total_flops == expected
        assert report.input_size == [[1, 3, 10, 12]]


class DeformConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3))  # 4 input channels, 2 groups

    def forward(self, x, offset, mask):
        return torchvision.ops.deform_conv2d(x, offset, self.weight, padding=1, mask=mask)


def test_deform_conv2d_counted_as_conv_macs():
    x, offset, mask = torch.randn(1, 4, 6, 7), torch.randn(1, 18, 6, 7), torch.rand(1, 9, 6, 7)
    report = count_flops(DeformConv(), (x, offset, mask))
    assert report.total_flops == (6 * 6 * 7) * (2 * 3 * 3)  # out elems x Cin/groups x kh x kw
    assert report.uncounted_ops == {}
    # plain fvcore cannot see it, and says so
    plain = count_flops(DeformConv(), (x, offset, mask), convention="fvcore")
    assert plain.total_flops == 0 and plain.uncounted_ops == {"torchvision::deform_conv2d": 1}


class SDPA(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_scaled_dot_product_attention():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    report = count_flops(SDPA(), (q, k, v))
    assert report.total_flops == 2 * 4 * 5 * 7 * 8 + 2 * 4 * 5 * 7 * 6  # QK^T + AV


class MHA(nn.Module):
    def __init__(self, mask=False, need_weights=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mask, self.need_weights = mask, need_weights

    def forward(self, q, kv):
        mask = torch.zeros(q.shape[1], kv.shape[1]) if self.mask else None
        return self.attn(q, kv, kv, attn_mask=mask, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("mask,need_weights", [(False, True), (True, True), (False, False)])
def test_multihead_attention(mask, need_weights):
    b, lq, lk, e = 2, 5, 7, 16
    expected = (b * lq * e * e + 2 * b * lk * e * e  # in-projection of q, k, v
                + b * lq * lk * e                    # Q K^T over all heads
                + b * lq * lk * e                    # attention @ V
                + b * lq * e * e)                    # out-projection
    model = MHA(mask, need_weights)
    report = count_flops(model, (torch.randn(b, lq, e), torch.randn(b, lk, e)))
    assert report.total_flops == expected
    assert report.uncounted_ops == {}
    if need_weights:  # the explicit path; need_weights=False goes through fused sdpa
        assert report.ignored_ops.get("aten::softmax") == 1
    if mask:
        assert "baddbmm" in report.per_operator_gflops


class GridSample(nn.Module):
    def forward(self, img, grid):
        return F.grid_sample(img, grid, align_corners=False)


def test_grid_sample_four_macs_per_output_element():
    img, grid = torch.randn(1, 4, 6, 6), torch.rand(1, 3, 5, 2) * 2 - 1
    report = count_flops(GridSample(), (img, grid))
    assert report.total_flops == 4 * (1 * 4 * 3 * 5)


def test_batch_norm_ignored_by_detectron2_counted_by_fvcore():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    x = torch.randn(1, 3, 5, 5)
    conv = 4 * 25 * 3
    d2 = count_flops(model, x)
    assert d2.total_flops == conv and d2.ignored_ops == {"aten::batch_norm": 1}
    fv = count_flops(model, x, convention="fvcore")
    assert fv.total_flops == conv + 2 * 4 * 25  # fvcore: eval-mode affine BN = 2 per element


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        f = self.backbone(x)
        return {"features": [f], "logits": self.head(f), "note": "not a tensor"}


def test_dict_outputs_eval_mode_and_training_flags_restored():
    model = DictModel().train()
    model.backbone[1].eval()  # e.g. frozen BN: must stay in eval afterwards
    report = count_flops(model, torch.randn(1, 3, 8, 8))
    backbone, head = 4 * 64 * 27, 2 * 64 * 4
    assert report.total_flops == backbone + head
    assert report.per_module_gflops["backbone"] == pytest.approx(backbone / 1e9)
    assert report.per_module_gflops["head"] == pytest.approx(head / 1e9)
    assert report.per_module_gflops["backbone.0"] == pytest.approx(backbone / 1e9)
    assert model.training and model.head.training and not model.backbone[1].training
    assert "torch" in report.provenance and "hardware" in report.provenance
    json.dumps(report.to_dict())


def test_unknown_convention_is_a_user_error():
    with pytest.raises(UserError):
        count_flops(nn.Conv2d(3, 3, 1), torch.randn(1, 3, 4, 4), convention="mmcv")


@pytest.fixture(scope="module")
def resnet50_reports():
    model = cli_bench.BACKBONES["resnet50"]()
    x = torch.randn(1, 3, 640, 864)
    return count_flops(model, x, convention="fvcore"), count_flops(model, x)


def test_resnet50_trunk_matches_measured_gflops(resnet50_reports):
    fvcore_report, d2_report = resnet50_reports
    assert fvcore_report.gflops == pytest.approx(45.29, rel=5e-3)
    assert d2_report.gflops == pytest.approx(45.04, rel=5e-3)
    assert d2_report.uncounted_ops == {}
    assert set(d2_report.per_module_gflops) >= {"stem", "res2", "res5", "res5.0"}


# ------------------------------------------------------------------------------ params


def test_count_params():
    model = nn.Sequential(nn.Linear(10, 5), nn.Conv2d(3, 4, 3))
    model[0].requires_grad_(False)
    p = count_params(model)
    assert p["total"] == 55 + 112 and p["trainable"] == 112
    assert p["per_module"] == {"0": 55, "1": 112}
    assert p["total_M"] == pytest.approx(167e-6)


# ----------------------------------------------------------------------------- latency


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.backbone(x) * 2)


def test_latency_record_is_sane_and_restores_state():
    model = TwoPart().train()
    before = torch.get_num_threads()
    rec = measure_latency(model, torch.randn(1, 3, 16, 16), warmup=1, iters=5, threads=1,
                          postprocess=lambda out: out.sigmoid(), progress=False)
    assert torch.get_num_threads() == before and model.training
    assert rec.threads == 1 and rec.provenance["torch_threads"] == 1
    assert 0 < rec.min_ms <= rec.median_ms <= rec.p90_ms
    assert rec.fps == pytest.approx(1000 / rec.mean_ms)
    assert len(rec.times_ms) == 5 and rec.kind == "CPU latency" and rec.precision == "fp32"
    assert rec.postprocess_included and rec.input_size == [[1, 3, 16, 16]]
    json.dumps(rec.to_dict())


def test_fp16_needs_cuda_and_bad_counts_are_user_errors():
    with pytest.raises(UserError):
        measure_latency(TwoPart(), torch.randn(1, 3, 8, 8), fp16=True, iters=1)
    with pytest.raises(UserError):
        measure_latency(TwoPart(), torch.randn(1, 3, 8, 8), iters=0)


def test_breakdown_parts_sum_to_total():
    model = TwoPart()
    rec = module_breakdown(model, torch.randn(1, 3, 16, 16),
                           modules={"backbone": model.backbone, "head": "head"},
                           postprocess=lambda out: out.sigmoid(), warmup=1, iters=4,
                           threads=1, progress=False)
    assert list(rec.parts_ms) == ["backbone", "head", "postprocess", "other"]
    assert sum(rec.parts_ms.values()) == pytest.approx(rec.total_ms, rel=1e-6)
    assert sum(rec.parts_pct.values()) == pytest.approx(100.0)
    assert rec.parts_ms["backbone"] > 0 and rec.postprocess_included
    assert not model.backbone[0]._forward_hooks  # hooks removed


def test_breakdown_rejects_nested_or_foreign_parts():
    model = TwoPart()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(UserError, match="nest"):
        module_breakdown(model, x, modules={"a": model.backbone, "b": model.backbone[0]}, iters=1)
    with pytest.raises(UserError, match="not a submodule"):
        module_breakdown(model, x, modules={"a": nn.Linear(2, 2)}, iters=1)


# --------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rtinst")
    cli_bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_all_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = _cli(["bench", "all", "--model", "resnet50", "--size", "64x96", "--iters", "2",
               "--warmup", "0", "--threads", "1", "--out", str(out)])
    assert rc == 0
    record = json.loads(out.read_text())
    assert record["model"] == "resnet50" and record["size"] == [64, 96]
    assert record["flops"]["input_size"] == [[1, 3, 64, 96]]
    assert record["params"]["total_M"] == pytest.approx(23.5, rel=0.01)  # R50 minus fc
    assert record["latency"]["threads"] == 1 and "provenance" in record
    assert "GFLOPs" in capsys.readouterr().out


def test_cli_bad_size_is_a_user_error():
    with pytest.raises(UserError, match="--size"):
        _cli(["bench", "params", "--model", "resnet50", "--size", "640by864"])


def test_cli_needs_a_model_or_a_config():
    with pytest.raises(UserError, match="give --model NAME"):
        _cli(["bench", "params"])
    with pytest.raises(UserError, match="unknown key 'model.decoder_layer'"):
        _cli(["bench", "params", "-o", "model.name=fastinst", "-o", "model.decoder_layer=1"])
