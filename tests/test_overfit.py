"""`rtinst bench overfit`: one fixed batch, its losses fall, AP scored on the same images."""

import json

from rtinst.cli import main
from rtinst.config import load_config
from rtinst.diagnostics.overfit import overfit


def _cfg(tmp_path, model="yolact"):
    return load_config(f"rtinst/configs/{model}/smoke.yaml", [
        f"data.root={tmp_path / 'data'}", "data.synthetic_train=4", "data.synthetic_val=2",
        "model.backbone.pretrained=none", "device=cpu"])


def test_overfit_drives_the_losses_down_on_the_fixed_batch(tmp_path):
    record = overfit(_cfg(tmp_path), num_images=2, steps=30, eval_every=15, progress=False)
    assert [p["step"] for p in record["curve"]] == [15, 30]
    first = sum(record["losses_at_step_1"].values())
    last = sum(record["curve"][-1]["losses"].values())
    assert last < 0.7 * first, (first, last)
    assert record["num_images"] == 2 and record["num_instances"] > 0
    for point in record["curve"]:  # scored on the memorized images, in both paddings
        assert 0.0 <= point["ap_train_padding"] <= 100.0 and 0.0 <= point["ap_single"] <= 100.0


def test_overfit_cli_writes_a_record_and_rejects_too_many_images(tmp_path, capsys):
    out = tmp_path / "overfit.json"
    args = ["bench", "overfit", "--config", "rtinst/configs/sparseinst/smoke.yaml",
            "-o", f"data.root={tmp_path / 'data'}", "-o", "data.synthetic_train=3",
            "-o", "data.synthetic_val=2", "-o", "model.backbone.pretrained=none", "--quiet"]
    assert main(args + ["--images", "2", "--steps", "2", "--eval-every", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["model"] == "sparseinst" and len(record["curve"]) == 2
    assert "AP (train padding)" in capsys.readouterr().out
    assert main(args + ["--images", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than --images 5" in err[0]
