"""SparseInst's loss normaliser: matched instances averaged over DDP processes, clamped >= 1."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rtinst.models import sparseinst
from rtinst.models.sparseinst import mean_num_instances


def _worker(rank: int, store: str, cases: list[list[int]], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        got = [mean_num_instances(case[rank], torch.device("cpu")) for case in cases]
        torch.save(torch.tensor(got), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_divide_by_the_same_averaged_count(tmp_path):
    out = str(tmp_path / "n")
    cases = [[5, 0], [1, 0]]  # local matched-instance counts of ranks 0 and 1
    mp.spawn(_worker, args=(str(tmp_path / "store"), cases, out), nprocs=2)
    for rank in range(2):
        # (5 + 0) / 2 on both ranks; (1 + 0) / 2 = 0.5 clamped to 1
        assert torch.load(f"{out}.{rank}", weights_only=True).tolist() == [2.5, 1.0]


def test_single_process_is_the_local_count():
    assert mean_num_instances(7, torch.device("cpu")) == 7.0
    assert mean_num_instances(0, torch.device("cpu")) == 1.0


def test_criterion_divides_by_the_normaliser(monkeypatch):
    from test_sparseinst import small_model

    model = small_model().train()
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64)
    masks[0, 8:40, 8:40] = 1
    masks[1, 30:60, 20:50] = 1
    targets = [{"labels": torch.tensor([1, 3]), "masks": masks.bool()},
               {"labels": torch.tensor([2]), "masks": masks[:1].bool()}]
    torch.manual_seed(0)
    base = model(images, targets)
    seen = []

    def doubled(local, device):
        seen.append(local)
        return 2.0 * max(float(local), 1.0)

    monkeypatch.setattr(sparseinst, "mean_num_instances", doubled)
    torch.manual_seed(0)
    half = model(images, targets)
    assert seen == [3]  # the matched instances of the whole batch
    for key in ("loss_cls", "loss_dice"):  # the two terms the official code normalises
        torch.testing.assert_close(half[key], base[key] / 2)
    torch.testing.assert_close(half["loss_mask"], base["loss_mask"])  # pixel BCE is a mean
