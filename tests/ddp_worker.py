"""Launched by tests/test_engine_ddp.py through torchrun (2 processes, gloo on CPU).

argv: a JSON file with a list of jobs, run in order by every process:

- ``{"name", "kind": "toy", "run_dir", "out"}``: the toy model of test_engine_loop.py through
  ``train_loop``; rank 0 saves its parameters to ``out``.
- ``{"name", "kind": "train_loop", "config", "overrides", "run_dir", "out"}``: the real model
  of a config through the engine's ``train_loop``; every rank saves its parameters (before
  and after training) to ``out`` with ``{rank}`` filled in.
- ``{"name", "kind": "run_training", ...}``: the same through ``run_training``, the
  ``rtinst train`` entry (rank 0 also evaluates and writes the record).

Each finished job prints ``job <name> ok <iterations>``.
"""

import json
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_engine_loop import ToyData, ToyModel, cfg, toy_collate  # noqa: E402

from rtinst.config import load_config  # noqa: E402
from rtinst.data.build import build_dataset, collate_fn  # noqa: E402
from rtinst.engine.loop import train_loop  # noqa: E402
from rtinst.engine.train import run_training, seed_everything  # noqa: E402
from rtinst.models import build_model  # noqa: E402


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def main(jobs: list[dict]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for job in jobs:
        if job["kind"] == "toy":
            torch.manual_seed(123)
            model = ToyModel()
            summary = train_loop(model, ToyData(), toy_collate, cfg(), job["run_dir"], seed=0,
                                 progress=False)
            if rank == 0:
                torch.save(flat(model), job["out"])
        else:
            run_cfg = load_config(job["config"], job["overrides"])
            if job["kind"] == "run_training":
                record = run_training(run_cfg, job["run_dir"], progress=False)
                summary = {"iterations": (record.metrics or {}).get("train_iterations")}
            else:
                seed_everything(run_cfg.seed)
                model = build_model(run_cfg.model)
                before = flat(model)
                dataset = build_dataset(run_cfg.data, "train", progress=False)
                summary = train_loop(model, dataset, collate_fn(run_cfg.data), run_cfg.train,
                                     job["run_dir"], seed=run_cfg.seed, progress=False)
                torch.save({"before": before, "after": flat(model)},
                           job["out"].format(rank=rank))
        dist.barrier()
        if rank == 0:
            print(f"job {job['name']} ok {summary['iterations']}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        main(json.load(f))
