"""Compact fp16 checkpoints: round trip per architecture, which weights load_run reads, the
size limit, and the committed files' sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from rtinst.cli import main as cli_main
from rtinst.config import load_config, save_config
from rtinst.data.build import collate_fn
from rtinst.engine.checkpoint import save_checkpoint
from rtinst.engine.compact import COMPACT, DEFAULT_MAX_MB, FORMAT, read_compact, write_compact
from rtinst.engine.restore import load_run
from rtinst.errors import UserError
from rtinst.models import build_model
from rtinst.records import RunRecord, write_record

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "rtinst" / "configs"


def make_run(root: Path, model: str, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A finished smoke run folder with a fake last.pt: random weights, non-trivial BN
    statistics and counters, and optimizer state (which the compact file drops)."""
    cfg = load_config(CONFIGS / model / "smoke.yaml", ["model.backbone.pretrained=none"])
    torch.manual_seed(seed)
    net = build_model(cfg.model)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.copy_(torch.rand_like(buf) + 0.5 if "var" in name else torch.randn_like(buf) * 0.1)
            else:
                buf.fill_(1234567)  # beyond float16's exact integers: must stay int64
    net.eval()
    opt = torch.optim.AdamW(net.parameters())
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    run_dir = root / f"{model}-smoke-x"
    run_dir.mkdir()
    save_config(cfg, run_dir / "config.yaml")
    record = RunRecord.start(cfg)
    record.provenance = {**record.provenance, "torch_threads": 1, "hardware": "CPU: test"}
    record.finish({"ap": 1.0, "train_iterations": 40, "step_time_s": 0.5})
    write_record(record, run_dir)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", model=net.state_dict(),
                    optimizer=opt.state_dict(), iteration=40)
    return run_dir, net


def same_detections(a: dict, b: dict, n: int = 10) -> list[tuple[int, int]]:
    """Pairs (i in a, j in b) of the same detection among a's first ``n``: near-tied scores of
    an untrained model may order them differently. Identified by the query / instance map
    that made them, or (YOLACT) by label and box."""
    key = next((k for k in ("indices", "query_index") if k in a), None)
    pairs = []
    for i in range(min(n, len(a["scores"]))):
        if key:
            hits = (b[key] == a[key][i]).nonzero().flatten()
        else:
            dist = (b["boxes"] - a["boxes"][i]).abs().sum(1)
            dist[b["labels"] != a["labels"][i]] = float("inf")
            hits = dist.argmin().view(1) if dist.min() < 0.5 else dist[:0].long()
        if len(hits):
            pairs.append((i, int(hits[0])))
    return pairs


def predict(net: torch.nn.Module, loaded) -> list[dict]:
    batch = collate_fn(loaded.cfg.data)([loaded.val_set[0], loaded.val_set[1]])
    with torch.no_grad():
        return net(batch.images, None, extras=True)


@pytest.mark.parametrize("model", ["yolact", "sparseinst", "fastinst"])
def test_fp16_round_trip_keeps_outputs_and_halves_the_weights(tmp_path, model):
    run_dir, net = make_run(tmp_path, model)
    done = write_compact(run_dir)
    assert done.path == run_dir / COMPACT and done.iterations == 40
    payload = torch.load(run_dir / COMPACT, weights_only=True)
    assert payload["format"] == FORMAT and payload["iterations"] == 40
    assert len(payload["source_sha256"]) == 64
    fp32 = net.state_dict()
    assert set(payload["model"]) == set(fp32)
    ints = [k for k, v in fp32.items() if not v.is_floating_point()]
    assert ints, "the smoke models have BatchNorm counters"
    for k, v in payload["model"].items():
        if k in ints:
            assert v.dtype == fp32[k].dtype and torch.equal(v, fp32[k])  # exact
        else:
            assert v.dtype == torch.float16
    fp32_bytes = sum(v.numel() * 4 for v in fp32.values() if v.is_floating_point())
    assert 0.45 < done.size_bytes / fp32_bytes < 0.6  # about half, and no optimizer state

    (run_dir / "checkpoints" / "last.pt").unlink()
    loaded = load_run(run_dir)  # from model_fp16.pt alone
    restored = loaded.model.state_dict()
    assert all(v.dtype == torch.float32 for v in restored.values() if v.is_floating_point())
    assert all(torch.equal(restored[k], fp32[k]) for k in ints)
    ours, theirs = predict(loaded.model, loaded), predict(net, loaded)
    for a, b in zip(ours, theirs):
        pairs = same_detections(a, b)
        assert len(pairs) >= 5
        for i, j in pairs:
            assert (a["mask_probs"][i] - b["mask_probs"][j]).abs().max() < 1e-2
            assert abs(a["scores"][i] - b["scores"][j]) < 1e-2


def test_compacting_the_same_checkpoint_twice_gives_the_same_bytes(tmp_path):
    """A committed compact that is re-written from the same checkpoint stays the same blob."""
    run_dir, _ = make_run(tmp_path, "yolact")
    write_compact(run_dir)
    first = (run_dir / COMPACT).read_bytes()
    write_compact(run_dir)
    assert (run_dir / COMPACT).read_bytes() == first


def test_load_run_prefers_last_pt(tmp_path):
    run_dir, net = make_run(tmp_path, "yolact")
    write_compact(run_dir)
    other = {k: v.clone() for k, v in net.state_dict().items()}
    key = next(k for k, v in other.items() if v.is_floating_point() and v.dim() == 4)
    other[key] = other[key] + 1.0  # last.pt differs from the compact file now
    save_checkpoint(run_dir / "checkpoints" / "last.pt", model=other, iteration=41)
    assert torch.equal(load_run(run_dir).model.state_dict()[key], other[key])
    (run_dir / "checkpoints" / "last.pt").unlink()
    compact = read_compact(run_dir / COMPACT)["model"][key]
    assert compact.dtype == torch.float32
    assert torch.equal(load_run(run_dir).model.state_dict()[key], compact)
    assert not torch.equal(compact, other[key])


def test_without_either_file_the_error_names_both_and_the_command(tmp_path):
    run_dir, _ = make_run(tmp_path, "sparseinst")
    (run_dir / "checkpoints" / "last.pt").unlink()
    with pytest.raises(UserError) as err:
        load_run(run_dir)
    message = str(err.value)
    assert message.startswith(f"{run_dir}/checkpoints/last.pt: no checkpoint")
    assert f"no compact {COMPACT}" in message
    assert f"`OMP_NUM_THREADS=1 rtinst train --config {run_dir}/config.yaml --run-dir {run_dir}`" in message
    assert "\n" not in message


def test_max_mb_refuses_and_keeps_the_earlier_file(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path, "fastinst")
    assert cli_main(["records", "compact", str(run_dir)]) == 0
    assert "model_fp16.pt" in capsys.readouterr().out
    before = (run_dir / COMPACT).read_bytes()
    size_mb = len(before) / 1e6
    with pytest.raises(UserError, match=rf"^{run_dir}: compact checkpoint would be {size_mb:.2f} MB, "
                                        r"over --max-mb 0.5; not written$"):
        write_compact(run_dir, max_mb=0.5)
    assert (run_dir / COMPACT).read_bytes() == before
    assert not list(run_dir.glob(".*.tmp"))
    assert cli_main(["records", "compact", str(run_dir), "--max-mb", "0.5"]) != 0
    assert f"{run_dir}: compact checkpoint would be {size_mb:.2f} MB" in capsys.readouterr().err
    assert cli_main(["records", "compact", str(run_dir), "--max-mb", f"{size_mb + 0.01:.2f}"]) == 0


def test_compacting_needs_a_checkpoint_and_reading_needs_the_format(tmp_path):
    run_dir, net = make_run(tmp_path, "yolact")
    (run_dir / "checkpoints" / "last.pt").unlink()
    with pytest.raises(UserError, match=r"no checkpoints/last.pt to compact"):
        write_compact(run_dir)
    torch.save({"model": net.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match=r"plain.pt: not a compact checkpoint \(format None"):
        read_compact(tmp_path / "plain.pt")


def test_a_frozen_backbone_is_stored_by_reference_to_its_initialization(tmp_path):
    from rtinst.models.backbones import TinyBackbone

    torch.manual_seed(3)
    init = tmp_path / "init_backbone.pt"
    torch.save(TinyBackbone().state_dict(), init)
    cfg = load_config(CONFIGS / "sparseinst" / "smoke.yaml",
                      [f"model.backbone.pretrained={init}", "model.backbone.freeze_at=5"])
    net = build_model(cfg.model).eval()
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / "config.yaml")
    record = RunRecord.start(cfg)
    record.finish({"ap": 1.0})
    write_record(record, run_dir)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", model=net.state_dict(), iteration=5)
    written = write_compact(run_dir)
    payload = torch.load(run_dir / COMPACT, weights_only=True)
    backbone_keys = sorted(k for k in net.state_dict() if k.startswith("backbone."))
    assert payload["from_init"]["keys"] == backbone_keys
    assert payload["from_init"]["file"] == str(init) and not any(k in payload["model"] for k in backbone_keys)
    heads = sum(v.numel() * 2 for k, v in net.state_dict().items()
                if not k.startswith("backbone.") and v.is_floating_point())
    assert written.size_bytes < heads + 50_000  # only the heads, in float16 (the trunk is 2.4 MB)
    (run_dir / "checkpoints" / "last.pt").unlink()  # as in a fresh clone
    restored = load_run(run_dir).model.state_dict()
    # the frozen trunk comes back exactly (float32 from the file), the heads rounded to fp16
    assert all(torch.equal(restored[k], net.state_dict()[k]) for k in backbone_keys)
    head = "decoder.inst_branch.iam_conv.weight"
    assert torch.equal(restored[head], net.state_dict()[head].half().float())
    torch.save({k: v + 1 for k, v in TinyBackbone().state_dict().items()}, init)
    with pytest.raises(UserError, match=r"model_fp16.pt: \d+ backbone tensors come from .*init_backbone.pt "
                                         r"\(sha256 \w{12}\), which has other contents"):
        load_run(run_dir)
    init.unlink()
    with pytest.raises(UserError, match=r"which is not here"):
        load_run(run_dir)


def test_a_trained_backbone_is_stored_whole(tmp_path):
    run_dir, net = make_run(tmp_path, "sparseinst")  # pretrained none: no initialization file
    write_compact(run_dir)
    assert "from_init" not in torch.load(run_dir / COMPACT, weights_only=True)


def test_committed_compact_checkpoints_are_small():
    files = sorted((REPO / "results" / "runs").glob(f"*/{COMPACT}"))
    sizes = {f.parent.name: f.stat().st_size / 1e6 for f in files}
    assert all(mb <= DEFAULT_MAX_MB for mb in sizes.values()), sizes
    assert sum(sizes.values()) <= 15.0, sizes


def test_notebooks_see_a_compact_file_as_weights(tmp_path):
    from rtinst.viz.run_report import missing_checkpoint

    run_dir, _ = make_run(tmp_path, "yolact")
    write_compact(run_dir)
    (run_dir / "checkpoints" / "last.pt").unlink()
    assert missing_checkpoint(run_dir) is None
    (run_dir / COMPACT).unlink()
    line = missing_checkpoint(run_dir)
    assert line.startswith(f"{run_dir} has no checkpoint (checkpoints are not committed) and no "
                           f"compact {COMPACT}; re-create it with `OMP_NUM_THREADS=1 rtinst train")
    (run_dir / "record.json").unlink()
    assert missing_checkpoint(run_dir) == (f"{run_dir} has no run record: not trained yet (`rtinst "
                                           f"sweep SPEC --preset PRESET --dry-run` lists a spec's "
                                           f"runs to train)")


def test_rtinst_viz_draws_from_the_compact_file_alone(tmp_path):
    run_dir, _ = make_run(tmp_path, "yolact")
    assert cli_main(["records", "compact", str(run_dir)]) == 0
    (run_dir / "checkpoints" / "last.pt").unlink()  # what a clone has: no checkpoints/
    out = tmp_path / "figures"
    assert cli_main(["viz", "prototypes", "--run", str(run_dir), "--out", str(out), "--images", "0"]) == 0
    assert (out / "prototypes.png").stat().st_size > 2000
    # nor coco_segm_results.json: the class confusion comes from the restored model's predictions
    assert cli_main(["viz", "confusion", "--run", str(run_dir), "--out", str(out)]) == 0
    table = pd.read_csv(out / f"confusion_{run_dir.name}.csv", index_col=0)
    gt = json.loads((REPO / "data/synthetic_smoke/annotations/instances_val.json").read_text())
    n = load_config(run_dir / "config.yaml").eval.max_images
    evaluated = {im["id"] for im in gt["images"][:n]}
    assert table.to_numpy().sum() == sum(1 for a in gt["annotations"]
                                         if a["image_id"] in evaluated and not a["iscrowd"])


def test_evaluate_reads_a_compact_file_as_float32_weights(tmp_path):
    from rtinst.engine.checkpoint_eval import model_from_checkpoint

    run_dir, net = make_run(tmp_path, "sparseinst")
    write_compact(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    model, extra = model_from_checkpoint(cfg, run_dir / COMPACT)
    assert extra["format"] == FORMAT and extra["iterations"] == 40
    for k, v in model.state_dict().items():
        want = net.state_dict()[k]
        assert torch.equal(v, want.half().float() if want.is_floating_point() else want)


def test_one_refused_run_does_not_stop_the_others(tmp_path, capsys):
    big, _ = make_run(tmp_path, "yolact")  # 1.7 M weights: ~3.4 MB in float16
    small, _ = make_run(tmp_path, "fastinst")  # 1.3 M: ~2.6 MB
    assert cli_main(["records", "compact", str(big), str(small), "--max-mb", "3"]) != 0
    out, err = capsys.readouterr()
    assert (small / COMPACT).is_file() and not (big / COMPACT).exists()
    assert f"{small / COMPACT}: " in out
    assert f"{big}: compact checkpoint would be 3." in err and str(small) not in err
