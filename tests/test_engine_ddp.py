"""DDP through torchrun on CPU (gloo, 2 processes) equals single-process training."""

import subprocess
import sys

import pytest
import torch

from test_engine_loop import params, run


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path):
    out = tmp_path / "ddp_params.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29533", "tests/ddp_worker.py", str(tmp_path / "ddp"), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single, _ = run(tmp_path, "single")  # same total batch (4) in one process
    # Same images, same transform seeds, gradients averaged over ranks = full-batch mean.
    torch.testing.assert_close(torch.load(out, weights_only=True), params(single),
                               rtol=1e-5, atol=1e-6)
