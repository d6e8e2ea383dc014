"""Predictions snapshots (rtinst.viz.snapshot): a FastInst run's query-figure fields for a few
val images, read back equal to the live prediction and drawn like it, and the errors of a
snapshot that does not fit the run or its data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rtinst import paths, viz  # noqa: E402
from rtinst.cli import main as cli_main  # noqa: E402
from rtinst.config import load_config  # noqa: E402
from rtinst.engine.compact import COMPACT, SNAPSHOT  # noqa: E402
from rtinst.engine.train import run_training  # noqa: E402
from rtinst.errors import UserError  # noqa: E402
from rtinst.io import file_sha256  # noqa: E402
from rtinst.viz.draw import to_input_grid  # noqa: E402
from rtinst.viz.render import render_queries  # noqa: E402
from rtinst.viz.snapshot import (FORMAT, keep_threshold, kept_detections, snapshot_run,  # noqa: E402
                                 snapshot_samples, write_snapshot)

REPO = Path(__file__).resolve().parents[1]
IMAGES = [0, 1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A smoke-trained FastInst run (seconds) with its snapshot of val images 0 and 1."""
    root = tmp_path_factory.mktemp("snapshot_runs")
    cfg = load_config(REPO / "rtinst" / "configs" / "fastinst" / "smoke.yaml",
                      ["model.backbone.pretrained=none"])
    run_training(cfg, root / "fastinst", progress=False)
    write_snapshot(viz.load_run(root / "fastinst"), IMAGES)
    return root / "fastinst"


@pytest.fixture(scope="module")
def live(run_dir):
    return viz.predict(viz.load_run(run_dir), IMAGES)


def without_weights(run_dir: Path, dest: Path) -> Path:
    """The run as a fresh clone has it: record, config, snapshot; no checkpoint, no compact."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("checkpoints", COMPACT))
    return dest


def test_kept_detections_are_the_best_and_those_above_the_score():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.05, 0.35, 0.2])
    assert kept_detections(scores, top=2, min_score=0.3).tolist() == [1, 4]
    assert kept_detections(scores, top=1, min_score=0.3).tolist() == [1, 4]  # 0.35 >= 0.3 as well
    assert kept_detections(scores, top=3, min_score=0.9).tolist() == [1, 2, 4, 5]  # the tie stays
    assert kept_detections(torch.zeros(0)).tolist() == []
    assert keep_threshold(scores, top=2, min_score=0.3) == 0.3  # 0.35, the 2nd best, is higher
    assert keep_threshold(scores, top=3, min_score=0.9) == pytest.approx(0.2)


def test_snapshot_reads_back_the_live_prediction(run_dir, live):
    snap = snapshot_samples(run_dir, IMAGES)
    for s, p in zip(snap, live):
        keep = kept_detections(p.result["scores"])
        assert (s.image_id, s.padded, s.size) == (p.image_id, p.padded, p.size)
        assert torch.equal(s.image, p.image) and torch.equal(s.gt_masks, p.gt_masks)
        assert torch.equal(s.gt_labels, p.gt_labels)
        res = s.result
        torch.testing.assert_close(res["query_locations"], p.result["query_locations"], rtol=0, atol=1e-6)
        torch.testing.assert_close(res["scores"], p.result["scores"][keep], rtol=0, atol=1e-7)
        assert torch.equal(res["labels"], p.result["labels"][keep])
        assert torch.equal(res["query_index"], p.result["query_index"][keep])
        assert res["labels"].dtype == res["query_index"].dtype == torch.int64
        assert res["mask_probs"].dtype == torch.float32
        binary = to_input_grid(p.result["mask_probs"][keep], p.padded, p.padded) > 0.5
        assert torch.equal(res["mask_probs"], binary.float())
        assert binary.any()  # not vacuous: the masks hold pixels
        # the figures' masks, cropped to the image, are the live ones
        assert torch.equal(to_input_grid(res["mask_probs"], s.padded, s.size) > 0.5,
                           to_input_grid(p.result["mask_probs"][keep], p.padded, p.size) > 0.5)


def test_snapshot_records_its_provenance_and_is_small(run_dir):
    data = json.loads((run_dir / SNAPSHOT).read_text())
    record = json.loads((run_dir / "record.json").read_text())
    assert data["format"] == FORMAT and data["config_hash"] == record["config_hash"]
    assert data["weights"] == {"file": "checkpoints/last.pt", "kind": "checkpoint",
                               "sha256": file_sha256(run_dir / "checkpoints" / "last.pt")}
    assert [(e["position"], e["file_name"]) for e in data["images"]] == [(0, "000001.jpg"), (1, "000002.jpg")]
    assert (run_dir / SNAPSHOT).stat().st_size < 20_000


def _axes_content(fig) -> list:
    """Per axes: its title, the pictures (overlays) and every scatter's points and colours."""
    out = []
    for ax in fig.axes:
        pictures = [np.asarray(im.get_array()) for im in ax.images]
        points = [(c.get_offsets().tolist(), c.get_facecolors().tolist()) for c in ax.collections]
        out.append((ax.get_title(), pictures, points))
    return out


def _assert_same_figure(a, b) -> None:
    for (ta, pa, sa), (tb, pb, sb) in zip(_axes_content(a), _axes_content(b), strict=True):
        assert ta == tb and sa == sb
        assert len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb))


def test_figures_from_the_snapshot_equal_the_live_ones(run_dir, live):
    snap = snapshot_run(run_dir, IMAGES)
    for s, p in zip(snap.samples, live):
        # highlight every kept detection: the most a snapshot can show
        min_score = float(s.result["scores"].min())
        fig_live = viz.query_locations_figure([("a", p)], snap.class_names, min_score)
        fig_snap = viz.query_locations_figure([("a", s)], snap.class_names, min_score)
        stars = [c for c in fig_snap.axes[1].collections if len(c.get_offsets()) == 1]
        assert len(stars) == len(s.result["scores"]) > 0
        _assert_same_figure(fig_live, fig_snap)
        _assert_same_figure(viz.query_masks_figure(p, snap.class_names),
                            viz.query_masks_figure(s, snap.class_names))
        plt.close("all")
    # every detection from the image's threshold on is kept: a figure from there is complete
    kept_from = json.loads((run_dir / SNAPSHOT).read_text())["images"][0]["kept_from"]
    assert kept_from == keep_threshold(live[0].result["scores"])
    snapshot_samples(run_dir, [0], min_score=kept_from)
    with pytest.raises(UserError, match=rf"^{run_dir / SNAPSHOT}: val image 0: holds the detections "
                                        rf"scoring >= .* \(10 of \d+\); min_score -1 needs the run's weights"):
        snapshot_samples(run_dir, [0], min_score=-1.0)


def test_render_queries_draws_a_run_without_weights_from_its_snapshot(run_dir, tmp_path, capsys):
    clone = without_weights(run_dir, tmp_path / "clone")
    out = tmp_path / "figures"
    written = render_queries([run_dir, clone], out, IMAGES, labels=["live", "snapshot"])
    assert sorted(p.name for p in written) == ["queries_image1.png", "queries_image2.png",
                                               "query_masks_image1.png", "query_masks_image2.png"]
    # the first run without weights as well: class names and the masks figure from the snapshot
    assert cli_main(["viz", "queries", "--run", str(clone), "--out", str(tmp_path / "cli")]) == 0
    assert {Path(p).name for p in capsys.readouterr().out.split()} == {p.name for p in written}
    (clone / SNAPSHOT).unlink()
    with pytest.raises(UserError, match=r"no checkpoint \(checkpoints are not committed\) and no compact"):
        render_queries([clone], out, IMAGES)


def test_a_snapshot_that_does_not_fit_names_its_file(run_dir, tmp_path):
    clone = without_weights(run_dir, tmp_path / "clone")
    path = clone / SNAPSHOT
    with pytest.raises(UserError, match=rf"^{path}: no val image position \[5\] \(it holds \[0, 1\]\); "
                                        r"`rtinst records compact --analysis --preset smoke` writes it"):
        snapshot_samples(clone, [0, 5])
    data = json.loads(path.read_text())
    data["images"][0]["image_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=rf"^{path}: val image 0 was image_id 999 \(000001.jpg\), .*"
                                        r"instances_val.json now has 1 \(000001.jpg\): the data was "
                                        r"generated differently"):
        snapshot_samples(clone, [0])
    data["images"][0]["image_id"] = 1
    data["config_hash"] = "0123abcd"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=rf"^{path}: written for config 0123abcd, but the run's record"):
        snapshot_samples(clone, [0])
    path.unlink()
    with pytest.raises(UserError, match=rf"^{path}: no predictions snapshot; `rtinst records compact "
                                        r"--analysis --preset smoke` writes it from the run's checkpoint; "
                                        r"re-create with `.*rtinst train --config"):
        snapshot_samples(clone, [0])


def _tiny_fastinst_default() -> Path:
    """The FastInst tiny default's run folder (its compact is committed), as the figures find it."""
    from rtinst.harness.analysis_runs import analysis_runs

    return next(a.run_dir for a in analysis_runs("tiny", ["queries"]) if a.weights is True)


TINY_DEFAULT = _tiny_fastinst_default()
TINY_DATA = paths.resolve(load_config(REPO / "rtinst/configs/fastinst/tiny.yaml").data.root)


@pytest.mark.skipif(not (TINY_DATA / "generation.json").is_file()
                    or not (TINY_DEFAULT / COMPACT).is_file(),
                    reason="needs the tiny data (make tiny-data) and the committed tiny FastInst run")
def test_two_images_of_the_tiny_fastinst_run_fit_in_20_kb(tmp_path):
    run = tmp_path / TINY_DEFAULT.name
    shutil.copytree(TINY_DEFAULT, run, ignore=shutil.ignore_patterns("checkpoints"))
    path = write_snapshot(viz.load_run(run), IMAGES)
    assert path.stat().st_size < 20_000
    assert json.loads(path.read_text())["weights"]["kind"] == "compact"
