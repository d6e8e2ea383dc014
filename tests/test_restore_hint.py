"""A committed run without its checkpoint or COCO results: the error says how to re-create them."""

import pytest

from rtinst.config import load_config, save_config
from rtinst.engine.restore import load_run
from rtinst.errors import UserError
from rtinst.records import RunRecord, write_record
from rtinst.viz.confusion import run_confusion


@pytest.fixture()
def bare_run(tmp_path):
    cfg = load_config("rtinst/configs/sparseinst/smoke.yaml")
    run_dir = tmp_path / "sparseinst-smoke-x"
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    record = RunRecord.start(cfg)
    record.provenance = {**record.provenance, "torch_threads": 2, "hardware": "CPU: test (2 cores)"}
    record.finish({"ap": 1.0, "train_iterations": 800, "step_time_s": 0.6, "train_seconds": 480.0})
    record.wall_time_s = 600.0
    write_record(record, run_dir)
    return run_dir


def test_a_missing_checkpoint_names_the_command_and_its_duration(bare_run):
    with pytest.raises(UserError) as err:
        load_run(bare_run)
    message = str(err.value)
    assert message.startswith(f"{bare_run}/checkpoints/last.pt: no checkpoint")
    assert (f"`OMP_NUM_THREADS=2 rtinst train --config {bare_run}/config.yaml --run-dir {bare_run}`"
            in message)
    assert "~10 min on CPU: test (2 cores): 800 steps x 0.60 s/step = 8 min of training" in message
    assert "\n" not in message


def test_missing_coco_results_give_the_same_hint(bare_run):
    with pytest.raises(UserError, match=r"coco_segm_results.json: .* re-create with `OMP_NUM_THREADS=2 "
                                        r"rtinst train .*800 steps x 0.60 s/step"):
        run_confusion(bare_run)
