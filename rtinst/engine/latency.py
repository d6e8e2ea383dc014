"""Cost of a model in time: latency and a per-module latency breakdown.

Latency
    Batch as given (1 for the papers), eval mode, ``torch.inference_mode``, warm-up runs,
    then wall-clock times of ``iters`` runs. On CUDA, ``torch.cuda.synchronize`` after each
    run (as the papers' FPS scripts). FP16 means a ``.half()`` copy of the model fed
    ``.half()`` inputs (the usual meaning of the papers' FP16 numbers), not autocast; it
    needs CUDA. On CPU the torch thread count is fixed for the measurement, recorded, and
    restored afterwards. FPS = 1000 / mean latency (ms).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rtinst.engine.flops import as_args, input_shapes, eval_mode
from rtinst.errors import UserError
from rtinst.provenance import provenance

# --------------------------------------------------------------------------- latency


def _check_device(device: str | torch.device, fp16: bool) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {device} requested but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if fp16 and device.type != "cuda":
        raise UserError("fp16 timing needs a CUDA device (a .half() model on CPU is not "
                        "what the papers measure)")
    return device


def _to(obj: Any, device: torch.device, half: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.to(device)
        return obj.half() if half and obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return {k: _to(v, device, half) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(v, device, half) for v in obj)
    return obj


def _on_device(model: nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*model.parameters(), *model.buffers()])


@contextlib.contextmanager
def _bench_setup(model: Any, inputs: Any, device: Any, fp16: bool, threads: int | None):
    """Yield (runnable, args, device): the model in eval mode on ``device`` (a ``.half()``
    copy for fp16, a copy when it lives elsewhere, else itself), inputs moved there, with
    ``threads`` torch threads; the caller's model, flags and thread count are restored."""
    device = _check_device(device, fp16)
    if threads is not None and threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        args = _to(as_args(inputs), device, fp16)
        if not isinstance(model, nn.Module):
            yield model, args, device
        elif fp16 or not _on_device(model, device):
            runnable = copy.deepcopy(model).to(device).eval()
            yield (runnable.half() if fp16 else runnable), args, device
        else:
            with eval_mode(model):
                yield model, args, device
    finally:
        torch.set_num_threads(previous_threads)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_runs(step: Callable[[], None], device: torch.device, warmup: int, iters: int,
                desc: str, progress: bool | None) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones."""
    if warmup < 0 or iters < 1:
        raise UserError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    disable = None if progress is None else not progress  # None: tqdm shows bars on a TTY
    times = []
    with torch.inference_mode():
        for _ in tqdm(range(warmup), desc=f"{desc} (warm-up)", disable=disable, leave=False):
            step()
        _sync(device)
        for _ in tqdm(range(iters), desc=desc, disable=disable, leave=False):
            start = time.perf_counter()
            step()
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def _timing_note(device: torch.device, fp16: bool, per_module: bool) -> str:
    note = "wall clock per run"
    if device.type == "cuda":
        note += ", torch.cuda.synchronize after each run"
        if per_module:
            note += " and around each part (asynchronous execution disabled)"
    if fp16:
        note += ", fp16 = .half() model and inputs"
    return note


@dataclasses.dataclass
class LatencyRecord:
    """Latency of ``model(*inputs)`` (+ post-processing when included), in milliseconds."""

    kind: str  # "GPU latency" or "CPU latency": never compare the two
    device: str
    precision: str  # "fp32" or "fp16"
    threads: int
    input_size: list[list[int]]
    postprocess_included: bool
    warmup: int
    iters: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    fps: float  # 1000 / mean_ms
    timing: str
    provenance: dict
    times_ms: list[float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _kind(device: torch.device) -> str:
    return "GPU latency" if device.type == "cuda" else "CPU latency"


def measure_latency(model_or_callable: Any, inputs: Any, device: str = "cpu", warmup: int = 10,
                    iters: int = 50, fp16: bool = False, threads: int | None = None,
                    postprocess: Callable[[Any], Any] | None = None,
                    progress: bool | None = None) -> LatencyRecord:
    """Time ``model_or_callable(*inputs)``, then ``postprocess(outputs)`` when given.

    ``inputs`` is a tensor or a tuple of positional arguments, moved to ``device``. A module
    runs in eval mode under ``torch.inference_mode``; the caller's module is left as it
    was. ``threads`` fixes torch's thread count for the measurement (restored after).
    """
    with _bench_setup(model_or_callable, inputs, device, fp16, threads) as (run, args, dev):
        def step():
            out = run(*args)
            if postprocess is not None:
                postprocess(out)

        times = _timed_runs(step, dev, warmup, iters, "latency", progress)
        used_threads, prov = torch.get_num_threads(), provenance(str(dev))
    mean = statistics.fmean(times)
    return LatencyRecord(
        kind=_kind(dev), device=str(dev), precision="fp16" if fp16 else "fp32",
        threads=used_threads, input_size=input_shapes(args),
        postprocess_included=postprocess is not None, warmup=warmup, iters=iters,
        median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
        mean_ms=mean, std_ms=float(np.std(times)), min_ms=min(times), fps=1000.0 / mean,
        timing=_timing_note(dev, fp16, per_module=False), provenance=prov, times_ms=times,
    )


# ------------------------------------------------------------------ module breakdown

_RESERVED_PARTS = ("other", "postprocess", "total")


@dataclasses.dataclass
class BreakdownRecord:
    """Mean time per image spent in each part (SparseInst Table 8 style)."""

    kind: str
    device: str
    precision: str
    threads: int
    input_size: list[list[int]]
    postprocess_included: bool
    warmup: int
    iters: int
    total_ms: float  # mean of forward (+ post-processing) with the per-part syncs
    parts_ms: dict[str, float]  # the parts, "postprocess" when timed, and "other"
    parts_pct: dict[str, float]
    timing: str
    provenance: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _part_paths(model: nn.Module, modules: Mapping[str, nn.Module | str] | None) -> dict:
    """Map each part name to its dotted submodule path; parts must not nest."""
    if modules is None:
        modules = dict(model.named_children())
    paths = {id(m): name for name, m in model.named_modules()}
    out = {}
    for part, module in modules.items():
        if part in _RESERVED_PARTS:
            raise UserError(f"breakdown part name {part!r} is reserved; rename it")
        path = module if isinstance(module, str) else paths.get(id(module), "")
        try:
            found = bool(path) and model.get_submodule(path) is not None
        except AttributeError:
            found = False
        if not found:
            raise UserError(f"breakdown part {part!r} is not a submodule of the model")
        out[part] = path
    for a, pa in out.items():
        for b, pb in out.items():
            if pb.startswith(pa + "."):
                raise UserError(f"breakdown parts {a!r} and {b!r} nest; parts must be disjoint")
    return out


def _timing_hooks(parts: Mapping[str, nn.Module], device: torch.device, acc: Counter) -> list:
    handles = []
    for part, module in parts.items():
        starts: list[float] = []

        def pre(mod, args, starts=starts):
            _sync(device)
            starts.append(time.perf_counter())

        def post(mod, args, out, part=part, starts=starts):
            _sync(device)
            acc[part] += (time.perf_counter() - starts.pop()) * 1e3

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def module_breakdown(model: nn.Module, inputs: Any,
                     modules: Mapping[str, nn.Module | str] | None = None,
                     postprocess: Callable[[Any], Any] | None = None, device: str = "cpu",
                     warmup: int = 10, iters: int = 50, fp16: bool = False,
                     threads: int | None = None, progress: bool | None = None) -> BreakdownRecord:
    """Time each part of ``model`` (``{"backbone": model.backbone, ...}`` or dotted names;
    default: its top-level children) with forward pre/post hooks that synchronize CUDA,
    plus ``postprocess(outputs)``; whatever the parts do not cover is "other"."""
    if not isinstance(model, nn.Module):
        raise UserError("module_breakdown needs an nn.Module")
    part_paths = _part_paths(model, modules)
    rows: list[dict] = []
    with _bench_setup(model, inputs, device, fp16, threads) as (run, args, dev):
        acc: Counter = Counter()
        handles = _timing_hooks({p: run.get_submodule(s) for p, s in part_paths.items()}, dev, acc)

        def step():
            acc.clear()
            start = time.perf_counter()
            out = run(*args)
            _sync(dev)
            if postprocess is not None:
                post_start = time.perf_counter()
                postprocess(out)
                _sync(dev)
                acc["postprocess"] += (time.perf_counter() - post_start) * 1e3
            acc["total"] = (time.perf_counter() - start) * 1e3
            rows.append(dict(acc))

        try:
            _timed_runs(step, dev, warmup, iters, "breakdown", progress)
        finally:
            for h in handles:
                h.remove()
        used_threads, prov = torch.get_num_threads(), provenance(str(dev))
    rows = rows[-iters:]
    names = [*part_paths, *(["postprocess"] if postprocess is not None else [])]
    mean = {n: statistics.fmean(r.get(n, 0.0) for r in rows) for n in [*names, "total"]}
    total = mean.pop("total")
    mean["other"] = max(total - sum(mean.values()), 0.0)
    return BreakdownRecord(
        kind=_kind(dev), device=str(dev), precision="fp16" if fp16 else "fp32",
        threads=used_threads, input_size=input_shapes(args),
        postprocess_included=postprocess is not None, warmup=warmup, iters=iters,
        total_ms=total, parts_ms=mean, parts_pct={n: 100 * v / total for n, v in mean.items()},
        timing=_timing_note(dev, fp16, per_module=True), provenance=prov,
    )
