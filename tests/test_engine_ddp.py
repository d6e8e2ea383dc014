"""DDP on CPU (gloo, 2 processes through torchrun): every model type trains.

One torchrun launch runs every job of tests/ddp_worker.py (process start-up is most of the
cost): the toy model, whose 2-process result must equal the 1-process one (same images,
same transform seeds, gradients averaged over ranks = full-batch mean), and each real model
at smoke scale for a few iterations - FastInst through ``run_training`` (the ``rtinst train``
entry) and, through ``train_loop``, SparseInst, YOLACT and the FastInst rows that leave
decoder parts idle (zero / learnable queries, E3 / E5 query source, D=0), and YOLACT with the
official frozen BatchNorm (1 image per process: parameters without gradient). DDP runs without
``find_unused_parameters``, so a parameter without gradient fails the launch. For the real
models the two processes must hold identical, trained parameters afterwards. (They are not
compared with a 1-process run: batch-norm statistics and random point sampling depend on
the per-process batch.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtinst.config import load_config
from rtinst.data.build import ensure_synthetic

from test_engine_loop import params, run

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "rtinst" / "configs"
ITERS = 3  # DDP's unused-parameter error surfaces from the second iteration on

FASTINST_IDLE_ROWS = {
    "fastinst_zero": ["model.query_type=zero"],
    "fastinst_learnable": ["model.query_type=learnable"],
    "fastinst_E3": ["model.query_source=E3"],
    "fastinst_E5": ["model.query_source=E5"],
    "fastinst_D0": ["model.decoder_layers=0"],
}


def _smoke(data_root: Path, extra=()) -> list[str]:
    return [f"data.root={data_root}", f"train.max_iters={ITERS}",
            "train.batch_size=2", "train.checkpoint_period=1000", "device=cpu",
            "eval.max_images=2", "eval.tide=false", *extra]


@pytest.fixture(scope="module")
def ddp_launch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    jobs = [{"name": "toy", "kind": "toy", "run_dir": str(tmp / "toy"), "out": str(tmp / "toy.pt")}]
    # in this order, so that a FastInst failure cannot hide the other models' results
    plan = {"sparseinst": ("train_loop", []), "yolact": ("train_loop", []),
            "yolact_official_bn": ("train_loop", ["model.batch_norm=official"])}  # BN frozen
    plan |= {"fastinst": ("run_training", [])}
    plan |= {name: ("train_loop", extra) for name, extra in FASTINST_IDLE_ROWS.items()}
    for name, (kind, extra) in plan.items():
        model = name.split("_")[0]
        config = CONFIGS / model / "smoke.yaml"
        overrides = _smoke(tmp / "data" / model, extra)
        # generated once here: two processes must not both generate the dataset
        ensure_synthetic(load_config(config, overrides).data, progress=False)
        jobs.append({"name": name, "kind": kind, "config": str(config), "overrides": overrides,
                     "run_dir": str(tmp / name), "out": str(tmp / f"{name}-{{rank}}.pt")})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests/ddp_worker.py"), str(tmp / "jobs.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    done = {w[1]: w[3] for line in proc.stdout.splitlines() if (w := line.split())[:1] == ["job"]}
    return {"tmp": tmp, "proc": proc, "done": done}


def _check_launch(ddp_launch, name):
    proc = ddp_launch["proc"]
    assert name in ddp_launch["done"], (
        f"DDP job {name!r} did not finish (rc {proc.returncode}): {proc.stderr[-3000:]}")


def test_toy_two_processes_match_single_process(ddp_launch, tmp_path):
    _check_launch(ddp_launch, "toy")
    single, _ = run(tmp_path, "single")  # same total batch (4) in one process
    torch.testing.assert_close(torch.load(ddp_launch["tmp"] / "toy.pt", weights_only=True),
                               params(single), rtol=1e-5, atol=1e-6)


def test_fastinst_trains_through_run_training(ddp_launch):
    _check_launch(ddp_launch, "fastinst")
    assert ddp_launch["done"]["fastinst"] == str(ITERS)
    record = json.loads((ddp_launch["tmp"] / "fastinst" / "record.json").read_text())
    assert record["status"] == "done" and record["metrics"]["train_iterations"] == ITERS


@pytest.mark.parametrize("name", ["sparseinst", "yolact", "yolact_official_bn",
                                  *FASTINST_IDLE_ROWS])
def test_model_trains_under_ddp_with_ranks_in_sync(ddp_launch, name):
    _check_launch(ddp_launch, name)
    assert ddp_launch["done"][name] == str(ITERS)
    r0, r1 = (torch.load(ddp_launch["tmp"] / f"{name}-{r}.pt", weights_only=True) for r in (0, 1))
    torch.testing.assert_close(r0["before"], r1["before"], rtol=0, atol=0)  # same init
    torch.testing.assert_close(r0["after"], r1["after"], rtol=0, atol=0)  # gradients all-reduced
    assert not torch.equal(r0["before"], r0["after"])  # and it trained
