"""Training loop: schedules, determinism, resume equivalence, NaN handling, logging."""

import json
from dataclasses import dataclass

from pathlib import Path

import pytest
import torch
from torch import nn

from rtinst.config_schema import TrainConfig
from rtinst.engine.loop import SeededBatchSampler, TrainingDiverged, train_loop
from rtinst.engine.optim import build_optimizer, lr_factor, milestones


class ToyData(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        x = torch.full((3, 4, 4), float(i)) + torch.rand(3, 4, 4)  # random "augmentation"
        return x, {"y": torch.tensor([i % 3])}


@dataclass
class ToyBatch:
    images: torch.Tensor
    targets: list


def toy_collate(items):
    return ToyBatch(torch.stack([x for x, _ in items]), [t for _, t in items])


class ToyModel(nn.Module):
    def __init__(self, fail_at=None, nan_at=None):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.calls, self.fail_at, self.nan_at = 0, fail_at, nan_at

    def forward(self, images, targets):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        logits = self.head(self.backbone(images).mean((2, 3)))
        y = torch.cat([t["y"] for t in targets])
        loss_cls = nn.functional.cross_entropy(logits, y)
        loss_reg = logits.pow(2).mean() * 0.01
        if self.calls == self.nan_at:
            loss_reg = loss_reg * float("nan")
        return {"loss_cls": loss_cls, "loss_reg": loss_reg}


def cfg(**kw):
    base = dict(optimizer="adamw", lr=1e-2, batch_size=4, max_iters=12, warmup_iters=3,
                steps=[0.5], checkpoint_period=5, log_period=1, amp=False)
    return TrainConfig(**{**base, **kw})


def run(tmp_path, name, model_kw=None, seed=0, workers=0, **kw):
    torch.manual_seed(123)  # same init for every run
    model = ToyModel(**(model_kw or {}))
    summary = train_loop(model, ToyData(), toy_collate, cfg(**kw), tmp_path / name, seed=seed,
                         num_workers=workers, progress=False)
    return model, summary


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_lr_schedule_warmup_and_fractional_steps():
    c = TrainConfig(lr=1.0, max_iters=100, warmup_iters=10, warmup_factor=0.001, steps=[0.9, 95],
                    gamma=0.1)
    assert milestones(c) == [90, 95]
    assert lr_factor(0, c) == pytest.approx(0.001)
    assert lr_factor(5, c) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, c) == 1.0 and lr_factor(89, c) == 1.0
    assert lr_factor(90, c) == pytest.approx(0.1) and lr_factor(95, c) == pytest.approx(0.01)


def test_backbone_lr_multiplier():
    opt = build_optimizer(ToyModel(), TrainConfig(lr=1e-3, backbone_lr_mult=0.1, optimizer="sgd"))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"head": 1e-3, "backbone": pytest.approx(1e-4)}
    assert isinstance(opt, torch.optim.SGD)


def test_lr_mults_give_a_module_its_own_lr_and_the_longest_prefix_wins():
    model = nn.Sequential()
    model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1))
    model.head = nn.Linear(4, 3)
    cfg = TrainConfig(lr=1e-3, backbone_lr_mult=0.1, lr_mults={"head": 10.0, "backbone.1": 0.5})
    opt = build_optimizer(model, cfg)
    assert [g["name"] for g in opt.param_groups][:2] == ["head", "backbone"]  # log reports group 0
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model.head.weight)] == pytest.approx(1e-2)
    assert by_param[id(model.backbone[0].weight)] == pytest.approx(1e-4)
    assert by_param[id(model.backbone[1].weight)] == pytest.approx(5e-4)  # over backbone_lr_mult
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_lr_mults_prefix_without_parameters_names_the_closest_module():
    from rtinst.errors import UserError
    with pytest.raises(UserError, match=r"train.lr_mults: 'hed' names no trainable parameter.*'head'"):
        build_optimizer(ToyModel(), TrainConfig(lr_mults={"hed": 2.0}))


def test_lr_mults_change_the_run_hash_only_when_set():
    from rtinst.config import load_config
    from rtinst.records import config_hash
    base = load_config("rtinst/configs/sparseinst/tiny.yaml")
    same = load_config("rtinst/configs/sparseinst/tiny.yaml", ["train.lr_mults={}"])
    other = load_config("rtinst/configs/sparseinst/tiny.yaml",
                        ["train.lr_mults={decoder.inst_branch.iam_conv: 10}"])
    assert config_hash(base) == config_hash(same)
    # the committed tiny default record is found under the same hash
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "results" / "runs" / f"sparseinst-tiny-{config_hash(base)}" / "record.json").is_file()
    assert config_hash(other) != config_hash(base)
    assert other.train.lr_mults == {"decoder.inst_branch.iam_conv": 10.0}
    with pytest.raises(Exception, match=r"train.lr_mults: invalid value -1.*>= 0"):
        load_config("rtinst/configs/sparseinst/tiny.yaml", ["train.lr_mults={x: -1}"])


def test_batches_depend_only_on_seed_and_iteration():
    full = list(SeededBatchSampler(10, 4, seed=1, start=0, stop=6))
    tail = list(SeededBatchSampler(10, 4, seed=1, start=3, stop=6))
    assert full[3:] == tail
    other = list(SeededBatchSampler(10, 4, seed=2, start=0, stop=6))
    assert full != other
    # Every epoch is a permutation: the first 10 draws cover every image once.
    first = [i for b in full for i, _ in b][:10]
    assert sorted(first) == list(range(10))


def test_same_seed_same_result_any_worker_count(tmp_path):
    a, _ = run(tmp_path, "a", seed=0)
    b, _ = run(tmp_path, "b", seed=0, workers=2)
    c, _ = run(tmp_path, "c", seed=1)
    torch.testing.assert_close(params(a), params(b), rtol=0, atol=0)
    assert not torch.equal(params(a), params(c))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    ref, _ = run(tmp_path, "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed", model_kw={"fail_at": 8})  # checkpoint at 5, killed in 8
    ckpt = tmp_path / "killed" / "checkpoints" / "last.pt"
    assert torch.load(ckpt, weights_only=True)["iteration"] == 5
    resumed, summary = run(tmp_path, "killed")
    assert summary["iterations"] == 12
    torch.testing.assert_close(params(resumed), params(ref), rtol=0, atol=0)
    # The log has each iteration exactly once, as if never interrupted.
    log = [json.loads(x) for x in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    ref_log = [json.loads(x) for x in (tmp_path / "ref" / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(12))
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref_log])
    assert {"lr", "loss_cls", "loss_reg", "seconds"} <= set(log[0])


def test_nan_loss_stops_with_step_and_term(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 3: loss term 'loss_reg' = nan"):
        run(tmp_path, "nan", model_kw={"nan_at": 4})


def test_time_budget_stops_early(tmp_path):
    _, summary = run(tmp_path, "budget", max_minutes=0.0, max_iters=1000)
    assert summary["iterations"] == 0


def test_scalars_go_to_a_tensorboard_events_file_in_the_run_folder(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, "tb", max_iters=6, log_period=2)
    events = list((tmp_path / "tb").glob("events.out.tfevents*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    log = [json.loads(line) for line in (tmp_path / "tb" / "train_log.jsonl").read_text().splitlines()]
    for key in ("loss", "loss_cls", "loss_reg", "lr"):
        scalars = acc.Scalars(f"train/{key}")
        assert [s.step for s in scalars] == [row["iter"] for row in log]
        assert [s.value for s in scalars] == pytest.approx([row[key] for row in log], rel=1e-6)


def test_without_a_bar_each_logged_step_prints_one_line(tmp_path, capsys):
    run(tmp_path, "lines", max_iters=4, log_period=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["2/4", "4/4"]
    assert all(" s/step  eta " in ln and "  loss " in ln for ln in lines)


def test_step_line_reads_like_detectron2():
    from rtinst.engine.loop import step_line

    row = {"iter": 119, "loss": 1.23449}
    assert step_line(row, 800, 0.45) == "step 120/800  loss 1.234  0.45 s/step  eta 5m"
    assert step_line(row, None, None) == "step 120  loss 1.234"
