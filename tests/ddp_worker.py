"""Launched by tests/test_engine_ddp.py through torchrun: trains the toy model with DDP."""

import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_engine_loop import ToyData, ToyModel, cfg, toy_collate  # noqa: E402

from rtinst.engine.loop import train_loop  # noqa: E402

dist.init_process_group("gloo")
torch.manual_seed(123)
model = ToyModel()
train_loop(model, ToyData(), toy_collate, cfg(), sys.argv[1], seed=0, progress=False)
if dist.get_rank() == 0:
    torch.save(torch.cat([p.detach().flatten() for p in model.parameters()]), sys.argv[2])
dist.destroy_process_group()
