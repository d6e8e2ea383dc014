"""ONNX export: onnxruntime on the exported file against eager PyTorch, for the three models
and their main switches (FastInst D1 / D3, SparseInst G-IAM / IAM, YOLACT k = 32).

For every export: raw outputs within 1e-4 (fp32) at two image sizes other than the traced
one, batch 2 included (every model exports with dynamic batch, height and width), and the
same detections after the model's post-processing (count, order, labels, scores, boxes, and
the binary masks at image size). One export per model runs in the default suite (the
SparseInst one through the CLI with a checkpoint); the other switches are marked ``slow``
(torch.export of a smoke model takes 15-100 s on the shared 2-core CPU).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from rtinst.cli import main as cli
from rtinst.config import load_config
from rtinst.engine.checkpoint import save_checkpoint
from rtinst.engine.export import (AdaptiveAvgPool2d, OnnxDetector, export_onnx, output_names,
                                  raw_outputs)
from rtinst.engine.inference import postprocess_masks
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.models.sparseinst import coordinate_features

CONFIGS = Path(__file__).resolve().parents[1] / "rtinst" / "configs"
SIZES = [(2, 96, 128), (1, 64, 96)]  # both differ from the traced example (2 x 128 x 160)
TOL = 1e-4


def smoke_model(name: str, *overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config(CONFIGS / name / "smoke.yaml", list(overrides))
    return build_model(cfg.model).eval()


def images(shape, seed: int = 1) -> torch.Tensor:
    b, h, w = shape
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_parity(model, path: Path) -> None:
    """Raw outputs within TOL and identical detections, at every size of SIZES."""
    detector = OnnxDetector(path, model)
    assert detector.meta["dynamic"] == {"batch": True, "height": True, "width": True}
    assert set(detector.meta["ranges"]) == {"batch", "height", "width"}
    for shape in SIZES:
        x = images(shape)
        ref, got = raw_outputs(model, x), detector.raw(x)
        assert list(got) == output_names(model)
        for name in ref:
            assert got[name].shape == ref[name].shape, name
            diff = float((got[name] - ref[name]).abs().max())
            assert diff <= TOL, f"{name} at {shape}: max abs diff {diff:.2e}"
        with torch.no_grad():
            eager = model(x)
        onnx = detector(x)
        assert len(onnx) == len(eager) == shape[0]
        for e, o in zip(eager, onnx):
            assert_same_detections(e, o, tuple(x.shape[-2:]))


def assert_same_detections(e: dict, o: dict, size: tuple[int, int]) -> None:
    assert len(e["scores"]) > 0, "no detections: the comparison would prove nothing"
    assert torch.equal(e["labels"], o["labels"])
    torch.testing.assert_close(o["scores"], e["scores"], atol=1e-5, rtol=0)
    if "boxes" in e:
        torch.testing.assert_close(o["boxes"], e["boxes"], atol=1e-3, rtol=0)
    thr = e.get("mask_threshold", 0.5)
    me = postprocess_masks(e["mask_probs"], size, size, size, thr)
    mo = postprocess_masks(o["mask_probs"], size, size, size, o.get("mask_threshold", 0.5))
    # a pixel may only flip where the eager probability is within the raw tolerance of the
    # threshold (the upsampled probability then sits on the decision boundary)
    full = F.interpolate(e["mask_probs"][:, None].float(), size=size, mode="bilinear",
                         align_corners=False)[:, 0]
    flipped = me != mo
    assert not flipped.any() or bool(((full[flipped] - thr).abs() < TOL).all())
    assert me.any(), "empty masks: the comparison would prove nothing"


# ------------------------------------------------------------------ one export per model


def test_sparseinst_g_iam_cli_with_checkpoint(tmp_path):
    """CLI end to end: a checkpoint's weights (not the config's random init) are exported."""
    trained = smoke_model("sparseinst", seed=7)  # stands for trained weights
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, model=trained.state_dict(), iteration=4)
    out = tmp_path / "model.onnx"
    rc = cli(["export", "onnx", "--config", str(CONFIGS / "sparseinst" / "smoke.yaml"),
              "--checkpoint", str(ckpt), "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert trained.cfg.iam_groups == 2  # the smoke preset is a Group-IAM
    assert_parity(trained, out)
    other = smoke_model("sparseinst", seed=8)  # different weights: the file must not match
    x = images(SIZES[0])
    diff = (OnnxDetector(out, other).raw(x)["logits"] - raw_outputs(other, x)["logits"]).abs()
    assert float(diff.max()) > 1e-3


def test_fastinst_d1(tmp_path):
    model = smoke_model("fastinst", "model.decoder_layers=1")
    report = export_onnx(model, tmp_path / "fastinst.onnx")
    assert report.outputs == ["class_logits", "mask_logits"]
    assert max(report.max_abs_diff.values()) <= TOL
    assert_parity(model, tmp_path / "fastinst.onnx")


def test_yolact_k32(tmp_path):
    model = smoke_model("yolact", "model.num_prototypes=32")
    report = export_onnx(model, tmp_path / "yolact.onnx")
    assert report.outputs[-1] == "anchors"
    assert_parity(model, tmp_path / "yolact.onnx")
    # the graph computes the priors from its own input: at each size they are the ones the
    # eager model uses there (a fixed-size prior table would fail the second size)
    det = OnnxDetector(tmp_path / "yolact.onnx", model)
    counts = []
    for shape in [(1, 64, 64), (1, 96, 128)]:
        x = images(shape)
        with torch.no_grad():
            sizes = [tuple(p.shape[-2:]) for p in model.fpn(model.backbone(x))]
        expected = model.anchors(sizes, shape[1:], torch.device("cpu"))
        torch.testing.assert_close(det.raw(x)["anchors"], expected, atol=1e-4, rtol=0)
        counts.append(len(expected))
    assert counts[0] != counts[1]


# ------------------------------------------------------------------ the other switches


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", [
    ("fastinst", ["model.decoder_layers=3"]),
    ("sparseinst", ["model.iam_groups=1"]),
    ("yolact", ["model.mask_type=fc"]),
])
def test_switches(tmp_path, name, overrides):
    model = smoke_model(name, *overrides)
    export_onnx(model, tmp_path / "m.onnx")
    assert_parity(model, tmp_path / "m.onnx")


@pytest.mark.slow
def test_static_export_refuses_other_sizes(tmp_path):
    model = smoke_model("yolact")
    report = export_onnx(model, tmp_path / "s.onnx", example_size=(64, 64), dynamic=False)
    assert report.dynamic == {"batch": False, "height": False, "width": False}
    det = OnnxDetector(tmp_path / "s.onnx", model)
    x = images((1, 64, 64))
    assert_same_detections(model(x)[0], det(x)[0], (64, 64))
    with pytest.raises(UserError, match="fixed height of 64, got 96"):
        det.raw(images((1, 96, 64)))


@pytest.mark.slow
def test_bench_latency_onnxruntime(tmp_path, capsys):
    out = tmp_path / "lat.json"
    rc = cli(["bench", "latency", "--config", str(CONFIGS / "yolact" / "smoke.yaml"), "--size",
              "64x64", "--runtime", "onnxruntime", "--threads", "1", "--warmup", "1", "--iters",
              "2", "--out", str(out)])
    assert rc == 0
    import json

    rec = json.loads(out.read_text())
    assert rec["latency"]["runtime"].startswith("PyTorch")
    onnx = rec["latency_onnxruntime"]
    assert "CPUExecutionProvider" in onnx["runtime"] and onnx["threads"] == 1
    assert onnx["postprocess_included"] and len(onnx["times_ms"]) == 2
    assert max(onnx["export"]["max_abs_diff"].values()) <= TOL


# ------------------------------------------------------------------ fast: errors and pieces


@pytest.mark.parametrize("override, switch", [
    ("model.backbone.dcn_stages=[5]", "model.backbone.dcn_stages=[5]"),
    ("model.deform_last_conv=true", "model.deform_last_conv=true"),
])
def test_deformable_convs_refused(tmp_path, capsys, override, switch):
    rc = cli(["export", "onnx", "--config", str(CONFIGS / "sparseinst" / "smoke.yaml"),
              "-o", override, "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert switch in err and "deform_conv2d" in err and "no ONNX operator" in err
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_of_another_model_refused(tmp_path, capsys):
    ckpt = tmp_path / "yolact.pt"
    save_checkpoint(ckpt, model=smoke_model("yolact").state_dict())
    rc = cli(["export", "onnx", "--config", str(CONFIGS / "sparseinst" / "smoke.yaml"),
              "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and str(ckpt) in err and "do not fit" in err


def test_bench_onnxruntime_needs_a_detector(capsys):
    assert cli(["bench", "latency", "--model", "resnet50", "--runtime", "onnxruntime"]) == 2
    assert "give --config" in capsys.readouterr().err


def test_onnx_detector_refuses_a_file_of_another_model(tmp_path):
    import onnx

    # a valid ONNX file without rtinst's metadata
    node = onnx.helper.make_node("Identity", ["images"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info(
        "images", onnx.TensorProto.FLOAT, [1, 3, 4, 4])], [onnx.helper.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(UserError, match="not an rtinst export"):
        OnnxDetector(tmp_path / "plain.onnx", smoke_model("yolact"))
    with pytest.raises(UserError, match="not found"):
        OnnxDetector(tmp_path / "missing.onnx", smoke_model("yolact"))


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (7, 9), (12, 16), (13, 2), (20, 27)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_adaptive_avg_pool_matches_pytorch(hw, bins):
    x = torch.randn(2, 4, *hw)
    torch.testing.assert_close(AdaptiveAvgPool2d(bins)(x), F.adaptive_avg_pool2d(x, bins),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", [(2, 2), (12, 16), (17, 40), (80, 108)])
def test_coordinate_features_while_exporting_match_linspace(hw):
    x = torch.zeros(2, 1, *hw)
    eager = coordinate_features(x)
    with mock.patch("torch.compiler.is_exporting", return_value=True):
        exported = coordinate_features(x)
    torch.testing.assert_close(exported, eager, atol=1e-6, rtol=0)
    assert exported[0, 0, 0, 0] == -1 and abs(float(exported[0, 1, -1, -1]) - 1) < 1e-6
