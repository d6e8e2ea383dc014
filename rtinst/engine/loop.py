"""The training loop: model-agnostic, deterministic, resumable, fails loudly on NaN.

A model is ``model(images, targets) -> dict of scalar losses`` in training mode. The loop
adds: warm-up + step schedule, per-module lr multipliers, gradient clipping, AMP on CUDA,
DDP when ``torch.distributed`` is initialised (launch with torchrun; ``batch_size`` is the
total over all processes, as detectron2's IMS_PER_BATCH), atomic checkpoints
every ``checkpoint_period`` iterations, a wall-clock budget (``max_minutes``), a JSONL log of
every logged step (also as TensorBoard scalars in the run folder), and a tqdm bar showing the
loss terms - or, without the bar, one ``step_line`` per logged step. A model with a
``prepare_training(per_process_batch, world_size, device_type)`` method gets it called first
(YOLACT resolves its BatchNorm mode there).

Determinism: batch ``i`` is a pure function of (seed, i) - which images (a per-epoch
permutation) and the seed of every random transform - so the same config + seed gives the
same numbers on CPU, for any number of data-loader workers, and a run resumed from a
checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from rtinst.config_schema import TrainConfig
from rtinst.engine.checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rtinst.engine.optim import build_optimizer, build_scheduler
from rtinst.errors import UserError


class TrainingDiverged(RuntimeError):
    """A loss term became NaN/inf; the message names the step and the term."""


def sample_seed(seed: int, iteration: int, position: int) -> int:
    return (seed * 1_000_003 + iteration * 1_009 + position) % (2**31 - 1)


class SeededBatchSampler(Sampler):
    """Yields, for iterations ``start..stop-1``, a batch of ``(index, transform_seed)``.

    Images are drawn from a new permutation each epoch (seeded by seed + epoch); the batch of
    iteration ``i`` does not depend on anything but (seed, i).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        global_batch = self.batch_size * self.world
        cached_epoch, perm = -1, None
        for it in range(self.start, self.stop):
            batch = []
            for j in range(self.batch_size):
                pos = it * global_batch + self.rank * self.batch_size + j
                epoch, k = divmod(pos, self.n)
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self._permutation(epoch)
                batch.append((int(perm[k]), sample_seed(self.seed, it, j + self.rank * self.batch_size)))
            yield batch


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs its random transforms under ``seed``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def _to_device(obj: Any, device: torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    for name, value in losses.items():
        if not torch.isfinite(value).all():
            raise TrainingDiverged(
                f"non-finite loss at step {step}: loss term '{name}' = {value.detach().item()}")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def snapshot_name(minutes: float | None = None, iteration: int | None = None) -> str:
    """File name of the snapshot taken after ``minutes`` of training or at ``iteration``."""
    return f"snapshot_{minutes:g}min.pt" if iteration is None else f"snapshot_{iteration}it.pt"


def _fmt_eta(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.1f}h"


def step_line(row: dict, max_iters: int | None, s_per_step: float | None) -> str:
    """``step 120/800  loss 1.234  0.45 s/step  eta 5m`` (as detectron2 / mmdet print), from a
    ``train_log.jsonl`` row; ``row["iter"]`` is 0-based, the line counts finished steps."""
    step = int(row["iter"]) + 1
    parts = [f"step {step}/{max_iters}" if max_iters else f"step {step}", f"loss {row['loss']:.3f}"]
    if s_per_step:
        parts.append(f"{s_per_step:.2f} s/step")
        if max_iters:
            parts.append(f"eta {_fmt_eta(s_per_step * (max_iters - step))}")
    return "  ".join(parts)


def _tensorboard(run_dir: Path):
    """A SummaryWriter on the run folder (the events file researchers open in TensorBoard)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir), flush_secs=30)


def train_loop(
    model: nn.Module,
    dataset: Dataset,
    collate: Callable,
    cfg: TrainConfig,
    run_dir: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` for ``cfg.max_iters`` iterations (or ``cfg.max_minutes``), resuming
    from ``run_dir/checkpoints/last.pt`` when it exists. Returns a summary dict."""
    device = torch.device(device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoints" / LAST
    log_path = run_dir / "train_log.jsonl"
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1

    if cfg.batch_size % world:
        raise UserError(f"train.batch_size={cfg.batch_size} is the total batch and must be "
                        f"divisible by the number of processes ({world})")
    # A model whose layers train differently with the per-process batch (YOLACT's
    # BatchNorm) settles that before its optimizer and DDP see its parameters.
    prepare = getattr(model, "prepare_training", None)
    if prepare is not None:
        prepare(cfg.batch_size // world, world, device.type)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, elapsed_before = 0, 0.0
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start, elapsed_before = state["iteration"], state["train_seconds"]
    if rank == 0 and log_path.exists():  # drop log lines a killed run wrote after its checkpoint
        lines = [ln for ln in log_path.read_text().splitlines() if json.loads(ln)["iter"] < start]
        log_path.write_text("".join(ln + "\n" for ln in lines))
    train_model = nn.parallel.DistributedDataParallel(model) if distributed else model

    sampler = SeededBatchSampler(len(dataset), cfg.batch_size // world, seed, start, cfg.max_iters,
                                 rank, world)
    loader = DataLoader(SeededDataset(dataset), batch_sampler=sampler, collate_fn=collate,
                        num_workers=num_workers, persistent_workers=False)

    def checkpoint(iteration: int, seconds: float) -> None:
        if rank == 0:
            save_checkpoint(ckpt_path, model=_unwrap(train_model).state_dict(),
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            scaler=scaler.state_dict(), rng=rng_state(), iteration=iteration,
                            train_seconds=seconds)

    snapshots = run_dir / "checkpoints"
    pending = sorted(m for m in cfg.snapshot_minutes if not (snapshots / snapshot_name(m)).is_file())
    pending_iters = set(cfg.snapshot_iters)

    t0 = time.perf_counter()
    budget = cfg.max_minutes * 60 if cfg.max_minutes is not None else math.inf
    it = start
    bar = tqdm(total=cfg.max_iters, initial=start, disable=not progress or rank != 0,
               desc="train", dynamic_ncols=True)
    log_file = open(log_path, "a") if rank == 0 else None
    # without the bar (papermill runs, sweeps), one line per logged step says how it goes
    lines = rank == 0 and bar.disable
    writer = _tensorboard(run_dir) if rank == 0 else None
    last = (start, time.perf_counter())
    try:
        for batch in loader:
            if elapsed_before + time.perf_counter() - t0 >= budget:
                break
            images, targets = _to_device(batch.images, device), _to_device(batch.targets, device)
            with torch.autocast(device.type, enabled=use_amp):
                losses = train_model(images, targets)
            check_finite(losses, it)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if cfg.clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            it += 1
            if rank == 0 and (it % cfg.log_period == 0 or it == cfg.max_iters):
                row = {"iter": it - 1, "lr": optimizer.param_groups[0]["lr"],
                       "seconds": round(elapsed_before + time.perf_counter() - t0, 3),
                       "loss": total.item(), **{k: v.item() for k, v in losses.items()}}
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
                for k, v in row.items():
                    if k.startswith("loss") or k == "lr":
                        writer.add_scalar(f"train/{k}", v, row["iter"])
                now = time.perf_counter()
                s_per_step = (now - last[1]) / max(1, it - last[0])
                last = (it, now)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.startswith("loss")})
                if lines:
                    print(step_line(row, cfg.max_iters, s_per_step), flush=True)
            bar.update(1)
            elapsed = elapsed_before + time.perf_counter() - t0
            while rank == 0 and pending and elapsed >= pending[0] * 60:
                save_checkpoint(snapshots / snapshot_name(pending.pop(0)),
                                model=_unwrap(train_model).state_dict(), iteration=it,
                                train_seconds=elapsed)
            if rank == 0 and it in pending_iters:
                save_checkpoint(snapshots / snapshot_name(iteration=it),
                                model=_unwrap(train_model).state_dict(), iteration=it,
                                train_seconds=elapsed)
            if it % cfg.checkpoint_period == 0:
                checkpoint(it, elapsed_before + time.perf_counter() - t0)
    finally:
        bar.close()
        if log_file:
            log_file.close()
        if writer is not None:
            writer.close()
    seconds = elapsed_before + time.perf_counter() - t0
    checkpoint(it, seconds)
    return {"iterations": it, "train_seconds": seconds,
            "step_time_s": (time.perf_counter() - t0) / max(1, it - start)}
