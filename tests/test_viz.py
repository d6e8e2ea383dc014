"""rtinst.viz on smoke-trained runs of the three models: figure content, the model semantics the
figures claim to show, the CLI and the papermill analysis notebooks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from rtinst import viz  # noqa: E402
from rtinst.cli import main as cli_main  # noqa: E402
from rtinst.config import load_config  # noqa: E402
from rtinst.engine.train import run_training  # noqa: E402
from rtinst.errors import UserError  # noqa: E402
from rtinst.models.yolact_loss import crop_region  # noqa: E402
from rtinst.viz.draw import to_input_grid  # noqa: E402
from rtinst.viz.prototypes import assemble  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "rtinst" / "configs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One smoke-trained run per model (seconds each), TIDE on."""
    root = tmp_path_factory.mktemp("viz_runs")
    out = {}
    for model in ("yolact", "sparseinst", "fastinst"):
        cfg = load_config(CONFIGS / model / "smoke.yaml",
                          ["model.backbone.pretrained=none", "eval.tide=true"])
        run_training(cfg, root / model, progress=False)
        out[model] = root / model
    return out


@pytest.fixture(scope="module")
def loaded(runs):
    return {m: viz.load_run(d) for m, d in runs.items()}


def assert_png_has_content(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000
    pixels = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert pixels.std() > 5, f"{path} looks blank"


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_to_input_grid_aligns_stride_maps_and_drops_padding():
    # one hot cell at stride 8 of a 64x64 padded input holding a 40x56 (h, w) image
    maps = torch.zeros(1, 8, 8)
    maps[0, 2, 3] = 1.0
    up = to_input_grid(maps, (64, 64), (40, 56))
    assert up.shape == (1, 40, 56)
    y, x = np.unravel_index(int(up[0].argmax()), (40, 56))
    assert 16 <= y < 24 and 24 <= x < 32  # inside the cell's 8x8 pixels


def test_load_run_rejects_folders_that_are_not_runs(tmp_path):
    with pytest.raises(UserError, match="run record not found"):
        viz.load_run(tmp_path)


def test_iam_figure_shows_every_group_and_the_mask(loaded, tmp_path):
    run = loaded["sparseinst"]
    sample = viz.predict(run, [0])[0]
    groups = run.cfg.model.iam_groups
    res = sample.result
    assert res["iam"].shape[:2] == (len(res["scores"]), groups) and groups > 1
    fig = viz.iam_figure(sample, run.class_names, top=2)
    n = min(2, len(res["scores"]))
    t = titles(fig)
    assert sum(s.startswith("IAM group") for s in t) == n * groups
    assert sum(s == "predicted mask" for s in t) == n
    assert any(run.class_names[int(res["labels"][res["scores"].argmax()])] in s for s in t)
    assert len(fig.axes) == n * (2 + groups) + n  # + one colour bar per row
    assert_png_has_content(viz.save_figure(fig, tmp_path / "iam.png"))
    plt.close(fig)


def test_iam_average_is_per_map_normalized_and_one_figure_per_group(loaded):
    run = loaded["sparseinst"]
    mean = viz.iam_average(run, max_images=3, grid=16)
    n, g = run.cfg.model.num_masks, run.cfg.model.iam_groups
    assert mean.shape == (n, g, 16, 16)
    assert float(mean.min()) >= 0 and float(mean.max()) <= 1 + 1e-6
    fig = viz.iam_average_figure(mean, group=g - 1)
    assert f"group {g} of {g}" in fig._suptitle.get_text()
    assert sum(1 for ax in fig.axes if ax.images) == n
    assert fig.axes[-1].get_ylabel() == "mean activation / per-image max"  # the colour bar
    plt.close(fig)
    with pytest.raises(UserError, match="group 5 out of range"):
        viz.iam_average_figure(mean, group=5)
    with pytest.raises(UserError, match="need a SparseInst run"):
        viz.iam_average(loaded["yolact"])


def test_assembly_reproduces_the_models_mask(loaded):
    run = loaded["yolact"]
    sample = next(s for s in viz.predict(run, [0, 1, 2, 3]) if len(s.result["scores"]))
    res = sample.result
    i = int(res["scores"].argmax())
    steps = assemble(sample, i)
    protos, coeff = res["prototypes"], res["coefficients"][i]
    torch.testing.assert_close(steps["linear"], torch.einsum("khw,k->hw", protos, coeff))
    # prototypes x coefficients -> sigmoid -> crop is exactly the mask the model returned
    torch.testing.assert_close(steps["cropped"], res["mask_probs"][i])
    k, h, w = protos.shape
    scale = torch.tensor([w / sample.padded[1], h / sample.padded[0]] * 2)
    assert torch.equal(steps["cropped"] > 0, (crop_region(res["boxes"][i:i + 1] * scale, h, w)[0])
                       & (steps["sigmoid"] > 0))
    fig = viz.assembly_figure(sample, run.class_names, detection=0, show=3)
    t = titles(fig)
    assert sum(s.startswith("prototype ") and ", c = " in s for s in t) == 3
    assert {"P c (all k prototypes)", "sigmoid(P c)", "cropped by the predicted box"} <= set(t)
    plt.close(fig)
    with pytest.raises(UserError, match="detection 999 out of range"):
        viz.assembly_figure(sample, run.class_names, detection=999)


def test_prototypes_and_coefficients_figures(loaded, tmp_path):
    run = loaded["yolact"]
    samples = viz.predict(run, [0, 1])
    fig = viz.prototypes_figure(samples, show=4)
    assert [s for s in titles(fig) if s.startswith("prototype")] == [f"prototype {j}" for j in range(1, 5)]
    assert_png_has_content(viz.save_figure(fig, tmp_path / "p.png"))
    plt.close(fig)
    fig = viz.coefficients_figure(samples[0], run.class_names, top=5)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "prototype" and ax.images[0].get_clim() == (-1, 1)
    assert len(ax.get_yticklabels()) == min(5, len(samples[0].result["scores"]))
    plt.close(fig)
    with pytest.raises(UserError, match="need a YOLACT run"):
        viz.prototypes_figure(viz.predict(loaded["sparseinst"], [0]))


def test_query_figures_put_queries_inside_the_image(loaded):
    run = loaded["fastinst"]
    sample = viz.predict(run, [0])[0]
    res = sample.result
    loc = res["query_locations"]
    h, w = sample.size
    ph, pw = sample.padded
    assert loc.shape == (run.cfg.model.num_ia_queries, 2)
    assert (loc[:, 0] >= 0).all() and (loc[:, 0] <= pw).all() and (loc[:, 1] <= ph).all()
    # every detection points back to an IA query marked as kept
    assert res["query_kept"][res["query_index"]].all()
    fig = viz.query_locations_figure([("a", sample), ("b", sample)], run.class_names, min_score=0.0)
    assert titles(fig)[:3] == [f"ground truth ({len(sample.gt_labels)} instances)", "a", "b"]
    big = [c for c in fig.axes[1].collections if len(c.get_offsets()) == 1]
    assert len(big) == len(res["scores"])  # one star per detection >= min_score (0 here)
    plt.close(fig)
    other = viz.predict(run, [1])[0]
    with pytest.raises(UserError, match="different images"):
        viz.query_locations_figure([("a", sample), ("b", other)], run.class_names)
    fig = viz.query_masks_figure(sample, run.class_names, top=3)
    assert all("query" in s for s in titles(fig)[:3])
    plt.close(fig)


def test_tide_table_and_comparison(runs, tmp_path):
    table = viz.tide_table([runs["yolact"], runs["sparseinst"]], labels=["Y", "S"])
    rec = json.loads((runs["yolact"] / "record.json").read_text())["metrics"]
    assert list(table.index) == ["Y", "S"]
    assert table.loc["Y", "Cls"] == rec["tide_cls"] and table.loc["Y", "Miss"] == rec["tide_miss"]
    fig = viz.tide_comparison_figure(table)
    bars = fig.axes[0].patches
    assert len(bars) == 2 * 6
    np.testing.assert_allclose([b.get_height() for b in bars[:6]],
                               table.loc["Y", ["Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"]].astype(float))
    plt.close(fig)
    with pytest.raises(UserError, match="2 labels for 1 runs"):
        viz.tide_table([runs["yolact"]], labels=["a", "b"])


def test_tide_table_names_a_run_without_tide(runs, tmp_path):
    run = tmp_path / "no_tide"
    run.mkdir()
    data = json.loads((runs["yolact"] / "record.json").read_text())
    data["metrics"] = {k: v for k, v in data["metrics"].items() if not k.startswith("tide_")}
    (run / "record.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=f"run {data['config_hash']} \\(yolact\\): no TIDE numbers"):
        viz.tide_table([run])


def test_speed_accuracy_points_and_figure():
    table = pd.DataFrame({"row": ["D=1", "D=3", "SOLOv2"], "implemented": [True, True, False],
                          "ours_gflops": [60.0, 75.5, np.nan], "ours_ap_mean": [20.0, 22.0, np.nan]})
    points = viz.speed_accuracy_points({"fastinst/table6a": (table, pd.DataFrame()),
                                        "x/no_cost": (table.drop(columns="ours_gflops"), None)})
    assert points.to_dict("list") == {"row": ["D=1", "D=3"], "gflops": [60.0, 75.5],
                                      "ap": [20.0, 22.0], "table": ["fastinst/table6a"] * 2}
    fig = viz.speed_accuracy_figure(points, x="gflops", y="ap", label="row", group="table")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["D=1", "D=3"]
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[60.0, 20.0], [75.5, 22.0]])
    plt.close(fig)
    with pytest.raises(UserError, match="columns \\['fps'\\] not in the table"):
        viz.speed_accuracy_figure(points, x="fps")


def test_cli_viz_writes_pngs_and_refuses_the_wrong_model(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["viz", "prototypes", "--run", str(runs["yolact"]), "--out", str(out),
                     "--images", "0,1"]) == 0
    written = capsys.readouterr().out.split()
    assert {Path(p).name for p in written} >= {"prototypes.png"}
    for p in written:
        assert_png_has_content(Path(p))
    assert cli_main(["viz", "iam", "--run", str(runs["yolact"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a yolact run; this figure needs sparseinst" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["viz", "prototypes", "--run", str(runs["yolact"]), "--out", str(out),
                     "--images", "0,x"]) == 2
    assert "--images '0,x'" in capsys.readouterr().err


def test_analysis_notebooks_run_with_papermill(runs, tmp_path):
    from rtinst.harness.notebook_exec import execute_notebook

    out = tmp_path / "figures"
    results = tmp_path / "results"
    table = pd.DataFrame({"row": ["a", "b"], "implemented": [True, True], "ours_gflops": [1.0, 2.0],
                          "ours_ap_mean": [3.0, 4.0]})
    (results / "tables" / "smoke").mkdir(parents=True)
    table.to_csv(results / "tables" / "smoke" / "yolact_table2b.csv", index=False)
    table.assign(paper_ap=[28.2, 29.8]).to_csv(results / "tables" / "smoke" / "yolact_table1_testdev.csv",
                                               index=False)
    from rtinst.viz.snapshot import write_snapshot

    # a FastInst run as a clone has a snapshot row's run: no weights, its predictions snapshot
    clone = tmp_path / "fastinst_snapshot"
    shutil.copytree(runs["fastinst"], clone)
    write_snapshot(viz.load_run(clone), [0, 1])
    shutil.rmtree(clone / "checkpoints")
    params = {
        "iam": {"run_dir": str(runs["sparseinst"]), "images": [0], "average_images": 2},
        "prototypes": {"run_dir": str(runs["yolact"]), "images": [0, 1]},
        "queries": {"run_dirs": [str(runs["fastinst"]), str(clone)], "labels": ["a", "b"],
                    "images": [0]},
        "tide": {"run_dirs": [], "runs_root": str(runs["yolact"].parent)},
        "speed_accuracy": {"results_dir": str(results), "preset": "smoke"},
    }
    for name, p in params.items():
        execute_notebook(REPO / "notebooks" / "analysis" / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                         {**p, "out_dir": str(out)}, cwd=REPO)
    pngs = sorted(q.name for q in out.glob("*.png"))
    assert {"iam_image1.png", "iam_mean_group1.png", "prototypes.png", "queries_image1.png",
            "query_masks_image1.png", "tide_comparison.png", "speed_accuracy_smoke_gflops.png",
            "figure1_smoke.png"} <= set(pngs)
    for q in out.glob("*.png"):
        assert_png_has_content(q)
    tide = pd.read_csv(out / "tide_comparison.csv", index_col=0)
    assert len(tide) == 3  # every smoke run was evaluated with TIDE


def _square_gt():
    def poly(x, y, s):
        return [[x, y, x + s, y, x + s, y + s, x, y + s]]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "segmentation": poly(2, 2, 10), "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": poly(20, 20, 12), "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "segmentation": poly(5, 5, 8), "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 3, "segmentation": poly(30, 0, 9), "iscrowd": 1}]
    for a in anns:
        a["area"], a["bbox"] = 100.0, [0, 0, 1, 1]
    return {"images": [{"id": 1, "height": 40, "width": 40}, {"id": 2, "height": 40, "width": 40}],
            "categories": [{"id": 3, "name": "circle"}, {"id": 7, "name": "star"}],
            "annotations": anns}


def test_class_confusion_of_gt_as_predictions_is_diagonal():
    from pycocotools import mask as mask_utils

    from rtinst.viz.confusion import _rle

    gt = _square_gt()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "segmentation": _rle(a["segmentation"], 40, 40)} for a in gt["annotations"] if not a["iscrowd"]]
    for d in dets:
        d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
    table = viz.class_confusion(gt, dets)
    assert table.loc["circle"].tolist() == [1, 0, 0] and table.loc["star"].tolist() == [0, 2, 0]
    assert viz.localized_accuracy(table) == 1.0  # crowd regions are not instances
    # the star in image 2 called a circle, with a better score than a correct duplicate
    wrong = dict(dets[2], category_id=3, score=0.95)
    table = viz.class_confusion(gt, dets + [wrong])
    assert table.loc["star"].tolist() == [1, 1, 0]
    # a detection that does not overlap enough leaves its object missed; low scores are ignored
    shifted = dict(dets[0], segmentation=mask_utils.encode(np.asfortranarray(np.zeros((40, 40), np.uint8))))
    table = viz.class_confusion(gt, [shifted, dict(dets[1], score=0.01)] + dets[2:])
    assert table["missed"].tolist() == [1, 1]
    fig = viz.confusion_figure(table)
    assert "right class: 100%" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].texts][:3] == ["0", "0", "1"]
    plt.close(fig)


def test_run_confusion_and_cli(runs, tmp_path, capsys):
    table = viz.run_confusion(runs["yolact"])
    gt = json.loads((REPO / "data/synthetic_smoke/annotations/instances_val.json").read_text())
    evaluated = {im["id"] for im in gt["images"][:8]}  # eval.max_images of the smoke preset
    n = sum(1 for a in gt["annotations"] if a["image_id"] in evaluated and not a["iscrowd"])
    assert table.to_numpy().sum() == n
    assert cli_main(["viz", "confusion", "--run", str(runs["yolact"]), "--out", str(tmp_path)]) == 0
    assert_png_has_content(Path(capsys.readouterr().out.split()[0]))
    recorded = viz.run_confusion(runs["sparseinst"])
    (runs["sparseinst"] / "coco_segm_results.json").rename(tmp_path / "moved.json")
    try:  # a clone has no COCO results: the restored model predicts the same ones
        assert viz.run_confusion(runs["sparseinst"]).equals(recorded)
    finally:
        (tmp_path / "moved.json").rename(runs["sparseinst"] / "coco_segm_results.json")
