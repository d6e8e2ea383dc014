"""Run records: atomic writes, round trip, DataFrame loader."""

import json
import os

import pytest

from rtinst.config import load_config
from rtinst.errors import UserError
from rtinst.io import atomic_path, atomic_write_json, remove_stale_tmp
from rtinst.records import RunRecord, config_hash, load_records, read_record, write_record


def test_record_round_trip_and_provenance(tmp_path):
    cfg = load_config(overrides=["model.name=fastinst", "model.decoder_layers=1", "preset=smoke"])
    rec = RunRecord.start(cfg).finish({"ap": 12.5, "ap50": 30.0})
    path = write_record(rec, tmp_path / "run")
    back = read_record(path)
    assert back.status == "done" and back.metrics == {"ap": 12.5, "ap50": 30.0}
    assert back.config_hash == config_hash(cfg)
    for key in ("hardware", "torch", "torch_threads", "git_commit", "python"):
        assert key in back.provenance
    assert back.wall_time_s is not None and back.wall_time_s >= 0


def test_failed_record_keeps_reason(tmp_path):
    rec = RunRecord.start(load_config()).fail("non-finite loss 'loss_dice' at step 12")
    write_record(rec, tmp_path)
    back = read_record(tmp_path)
    assert back.status == "failed" and "step 12" in back.error


def test_load_records_dataframe(tmp_path):
    for i, depth in enumerate([2, 4, 6]):
        cfg = load_config(overrides=[f"model.decoder_depth={depth}", "preset=tiny"])
        write_record(RunRecord.start(cfg).finish({"ap": float(depth)}), tmp_path / f"r{i}")
    write_record(RunRecord.start(load_config()).fail("boom"), tmp_path / "failed")
    df = load_records(tmp_path, config_keys=["model.decoder_depth"])
    assert len(df) == 4
    done = df[df.status == "done"].sort_values("config.model.decoder_depth")
    assert done["ap"].tolist() == [2.0, 4.0, 6.0]
    assert set(done["preset"]) == {"tiny"} and set(done["model"]) == {"sparseinst"}
    assert df.loc[df.status == "failed", "error"].item() == "boom"
    full = load_records(tmp_path)
    assert "config.model.iam_groups" in full.columns


def test_bad_record_is_a_user_error(tmp_path):
    (tmp_path / "record.json").write_text("{not json")
    with pytest.raises(UserError, match="record.json: not a valid run record"):
        read_record(tmp_path)
    with pytest.raises(UserError, match="run record not found"):
        read_record(tmp_path / "nope")


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["m.json"]  # no temp file left behind


def test_remove_stale_tmp_clears_what_a_killed_writer_left(tmp_path):
    # a kill -9 between mkstemp and os.replace leaves ``.<name>.<random>.tmp`` beside the target
    target = tmp_path / "run" / "record.json"
    atomic_write_json(target, {"a": 1})
    stale = [target.parent / ".record.json.x1.tmp", target.parent / ".other.json.x2.tmp",
             target.parent / "ckpt" / ".model.pt.x3.tmp"]
    for p in stale:
        p.parent.mkdir(exist_ok=True)
        p.write_text("half")
    assert remove_stale_tmp(target) == [stale[0]]  # a file: only its own temp files
    assert stale[1].exists() and stale[2].exists()
    assert sorted(remove_stale_tmp(tmp_path)) == sorted(stale[1:])  # a folder: all, recursively
    assert json.loads(target.read_text()) == {"a": 1}
    assert remove_stale_tmp(tmp_path / "run") == []
