"""What a sweep shows while it runs: a bar over its runs with its own ETA, and the running
job's step, loss and s/step.

The bar is ``tqdm.auto`` (a widget in notebooks, text in a terminal). Its ETA is the sweep's
estimate of the runs still to come (:func:`rtinst.harness.estimates.price_runs`, from the
step times of finished runs), not tqdm's rate over a handful of unequal runs. The running
job is read from the file every run writes as it trains (``train_log.jsonl``), so this works
for every executor - a process pool, papermill kernels, SLURM jobs - without a channel back
from the worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from rtinst.engine.loop import step_line
from rtinst.harness.estimates import _fmt_seconds


def last_log_rows(run_dir: str | Path, n: int = 2) -> list[dict]:
    """The last ``n`` rows of a run's ``train_log.jsonl`` ([] when there is none yet)."""
    path = Path(run_dir) / "train_log.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in tail[-n - 1:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the 16 KiB window or being written
            continue
    return rows[-n:]


def job_status_line(run_dir: str | Path, max_iters: int | None) -> str | None:
    """``step 120/800  loss 1.234  0.45 s/step  eta 5m`` of a run from its log, or None."""
    rows = last_log_rows(run_dir)
    if not rows:
        return None
    s_per_step = None
    if len(rows) == 2 and rows[1]["iter"] > rows[0]["iter"]:
        s_per_step = (rows[1]["seconds"] - rows[0]["seconds"]) / (rows[1]["iter"] - rows[0]["iter"])
    return step_line(rows[-1], max_iters, s_per_step)


class SweepProgress:
    """The bar of one sweep. ``prices``: estimated seconds per run (hash -> s); ``parallel``:
    how many runs the executor runs at once (the ETA divides by it)."""

    def __init__(self, prices: dict[str, float], parallel: int = 1, enabled: bool = True,
                 log: Callable[[str], None] | None = print):
        from tqdm.auto import tqdm

        self.left = dict(prices)
        self.parallel = max(1, parallel)
        self.log = log or (lambda _m: None)
        self.seen: dict[str, int] = {}  # run hash -> last logged iteration shown
        self.bar = tqdm(total=len(prices), unit="run", desc="sweep", disable=not enabled,
                        dynamic_ncols=True, bar_format="{desc}: {n_fmt}/{total_fmt} runs |{bar}| "
                        "{elapsed} elapsed{postfix}")
        self._eta()

    def _eta(self, running: str = "") -> None:
        eta = sum(self.left.values()) / self.parallel
        self.bar.set_postfix_str(f"eta ~{_fmt_seconds(eta)} (estimate){running}", refresh=True)

    def write(self, message: str) -> None:
        """A line above the bar (the bar is redrawn below it)."""
        if self.bar.disable:
            self.log(message)
            return
        with self.bar.external_write_mode():
            self.log(message)

    def watch(self, running: dict[str, tuple[str, int | None]]) -> None:
        """``running``: hash -> (run_dir, max_iters) of the submitted, unfinished runs. The
        one that logged last is shown in the bar; each new logged step is one line."""
        latest, latest_time = None, -1.0
        for key, (run_dir, max_iters) in running.items():
            path = Path(run_dir) / "train_log.jsonl"
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            rows = last_log_rows(run_dir, 1)
            if rows and rows[-1]["iter"] != self.seen.get(key):
                self.seen[key] = rows[-1]["iter"]
                line = job_status_line(run_dir, max_iters)
                self.write(f"  {Path(run_dir).name}: {line}")
            if mtime > latest_time:
                latest, latest_time = (key, run_dir, max_iters), mtime
        text = ""
        if latest is not None:
            line = job_status_line(latest[1], latest[2])
            text = f"; {Path(latest[1]).name}: {line}" if line else ""
        self._eta(text)

    def finished(self, key: str) -> None:
        self.left.pop(key, None)
        self.seen.pop(key, None)
        self.bar.update(1)
        self._eta()

    def close(self) -> None:
        self.bar.close()
