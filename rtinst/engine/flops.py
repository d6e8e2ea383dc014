"""Cost of a model at rest: FLOPs and parameters.


FLOPs
    Counted with ``fvcore.nn.FlopCountAnalysis`` (a JIT trace, eval mode, no grad), where
    one fused multiply-add is one flop. Two conventions:

    ``"detectron2"`` (default, the one FastInst and SparseInst report)
        fvcore's handlers, minus the ops in :data:`DETECTRON2_IGNORED_OPS` (the set
        ``detectron2.utils.analysis.FlopCountAnalysis`` ignores: batch_norm, which folds into
        the conv at inference, plus cheap elementwise/reduction ops, max_pool2d and nms)
        and :data:`DATA_MOVEMENT_OPS` (no arithmetic), plus the handlers in
        :data:`EXTRA_HANDLERS` for ops our models use that fvcore skips silently.
        Norms other than batch_norm (group_norm, layer_norm, instance_norm), upsampling,
        adaptive_avg_pool2d and grid_sampler stay counted: detectron2 does not ignore them.
    ``"fvcore"``
        plain fvcore defaults (batch_norm counted, no extra handlers); reproduces the
        numbers a bare ``FlopCountAnalysis(model, x).total()`` gives.

    In both, fvcore's own list of no-arithmetic ops (view, cat, relu, slicing, ...) is
    never counted. Ops with no handler are not counted but are *reported* per operator in
    ``FlopReport.uncounted_ops``, so nothing is skipped silently.

    Extra handlers (all multiply-add counts, bias and scaling left out as in fvcore):

    - ``torchvision::deform_conv2d``: the MACs of a regular conv of the same shapes,
      ``out.numel() * Cin/groups * kh * kw``. The bilinear sampling of the offset input
      (4 MACs per sampled value) and the DCNv2 mask product are not counted. Note that
      detectron2's own DCN is a Python autograd op that fvcore cannot see, so papers'
      GFLOPs for DCN backbones count DCN layers as 0: subtract ``per_operator_gflops
      ["deform_conv2d"]`` to compare with them.
    - ``aten::scaled_dot_product_attention``: the two matmuls,
      ``B*H*Lq*Lk*d`` (Q K^T) + ``B*H*Lq*Lk*dv`` (attention @ V); softmax not counted.
    - ``aten::baddbmm``: the batched product ``b*n*m*p`` (nn.MultiheadAttention with a mask).
    - ``aten::grid_sampler_2d``: as fvcore's ``aten::grid_sampler`` (bilinear): 4 per
      output element, i.e. ``4 * N*C*Hout*Wout`` (MSDeformAttn's sampling).

    nn.MultiheadAttention's fused inference fast path is switched off while tracing, so it
    is counted through its parts: in-projection (linear), Q K^T and attention @ V
    (bmm/baddbmm/sdpa) and out-projection (linear). einsum, bmm, matmul, linear and conv
    use fvcore's built-in handlers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from rtinst.errors import UserError
from rtinst.provenance import provenance

# Copied as a list of names from detectron2.utils.analysis._IGNORED_OPS (detectron2 main).
DETECTRON2_IGNORED_OPS = frozenset({
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm",
    "aten::constant_pad_nd", "aten::div", "aten::div_", "aten::exp", "aten::log2",
    "aten::max_pool2d", "aten::meshgrid", "aten::mul", "aten::mul_", "aten::neg",
    "aten::nonzero_numpy", "aten::reciprocal", "aten::repeat_interleave", "aten::rsub",
    "aten::sigmoid", "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt",
    "aten::sub", "torchvision::nms",
})

# Pure data movement (no arithmetic) that fvcore's own no-flop list misses; ignored in the
# detectron2 convention so ``uncounted_ops`` lists only ops that may really cost something.
DATA_MOVEMENT_OPS = frozenset({
    "aten::unflatten", "aten::clone", "aten::expand_as", "aten::view_as", "aten::repeat",
    "aten::flip", "aten::movedim",
})

CONVENTIONS = ("detectron2", "fvcore")


# ----------------------------------------------------------------------------- FLOPs


def _fvcore():
    with warnings.catch_warnings():  # fvcore scripts a loss at import: torch.jit FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn
        import fvcore.nn.jit_handles
    return fvcore.nn


def _shape(value) -> list[int]:
    return _fvcore().jit_handles.get_shape(value)


def deform_conv2d_flops(inputs: list, outputs: list) -> int:
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): conv MACs."""
    weight = _shape(inputs[1])  # (Cout, Cin/groups, kh, kw)
    return math.prod(_shape(outputs[0])) * math.prod(weight[1:])


def sdpa_flops(inputs: list, outputs: list) -> int:
    """aten::scaled_dot_product_attention(q, k, v, ...): Q K^T plus attention @ V."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch, (lq, d), lk, dv = math.prod(q[:-2]), q[-2:], k[-2], v[-1]
    return batch * lq * lk * (d + dv)


def baddbmm_flops(inputs: list, outputs: list) -> int:
    """aten::baddbmm(bias, batch1, batch2, beta, alpha): the batched matmul only."""
    b, n, m = _shape(inputs[1])
    return b * n * m * _shape(inputs[2])[-1]


def grid_sampler_flops(inputs: list, outputs: list) -> int:
    """Bilinear sampling: 4 MACs per output element (fvcore's aten::grid_sampler rule)."""
    return 4 * math.prod(_shape(outputs[0]))


EXTRA_HANDLERS: dict[str, Callable] = {
    "torchvision::deform_conv2d": deform_conv2d_flops,
    "aten::scaled_dot_product_attention": sdpa_flops,
    "aten::baddbmm": baddbmm_flops,
    "aten::grid_sampler_2d": grid_sampler_flops,
}


@dataclasses.dataclass
class FlopReport:
    """FLOPs of one forward pass (1 multiply-add = 1 flop)."""

    convention: str
    total_flops: int
    gflops: float
    per_module_gflops: dict[str, float]  # top-level children and (dotted) grandchildren
    per_operator_gflops: dict[str, float]
    ignored_ops: dict[str, int]  # left out by the convention -> occurrences in this trace
    uncounted_ops: dict[str, int]  # no handler, not counted -> occurrences
    input_size: list[list[int]]
    provenance: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _TensorOutputs(nn.Module):
    """Traces ``model`` and returns every tensor of its (nested) output as a flat tuple,
    so dict/list/dataclass outputs trace and no output-producing op is dropped."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return tuple(_flatten_tensors(self.model(*args)))


def _flatten_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _flatten_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten_tensors(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _flatten_tensors(getattr(obj, f.name))


def as_args(inputs: Any) -> tuple:
    """A tensor is one positional argument; a tuple/list is the positional arguments."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def input_shapes(args: tuple) -> list[list[int]]:
    return [list(t.shape) for t in _flatten_tensors(list(args))]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own training flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _mha_fastpath(enabled: bool) -> Iterator[None]:
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _flop_analysis(model: nn.Module, args: tuple, convention: str):
    analysis = _fvcore().FlopCountAnalysis(_TensorOutputs(model), args)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    ignored: Counter = Counter()
    if convention == "detectron2":
        analysis.set_op_handle(**EXTRA_HANDLERS)
        for op in DETECTRON2_IGNORED_OPS | DATA_MOVEMENT_OPS:  # a handler that counts 0 but notes the op
            analysis.set_op_handle(op, _noting_ignored(op, ignored))
    return analysis, ignored


def _noting_ignored(op: str, seen: Counter) -> Callable:
    def handle(inputs, outputs):
        seen[op] += 1
        return Counter()

    return handle


def count_flops(model: nn.Module, inputs: Any, convention: str = "detectron2",
                depth: int = 2) -> FlopReport:
    """Count the FLOPs of ``model(*inputs)`` (``inputs``: a tensor or a tuple of tensors).

    The model is traced in eval mode without grad, on whatever device it is on; every
    submodule's training flag is restored afterwards. Outputs may be nested dicts/lists.
    ``per_module_gflops`` holds modules up to ``depth`` levels below the model.
    """
    if convention not in CONVENTIONS:
        raise UserError(f"unknown FLOP convention {convention!r}; choose one of {CONVENTIONS}")
    args = as_args(inputs)
    with eval_mode(model), torch.no_grad(), _mha_fastpath(False):
        analysis, ignored = _flop_analysis(model, args, convention)
        total = int(analysis.total())
        by_module = analysis.by_module()
        by_operator = analysis.by_operator()
        uncounted = analysis.unsupported_ops()
    per_module = {}
    for name, flops in by_module.items():
        if name.startswith("model.") and name.count(".") <= depth:
            per_module[name[len("model."):]] = flops / 1e9
    device = next((str(p.device) for p in model.parameters()), "cpu")
    return FlopReport(
        convention=convention, total_flops=total, gflops=total / 1e9,
        per_module_gflops=per_module,
        per_operator_gflops={k: v / 1e9 for k, v in sorted(by_operator.items())},
        ignored_ops=dict(sorted(ignored.items())), uncounted_ops=dict(sorted(uncounted.items())),
        input_size=input_shapes(args), provenance=provenance(device),
    )


# ---------------------------------------------------------------------------- params


def count_params(model: nn.Module) -> dict:
    """Parameter counts: total, trainable and per top-level child (shared ones once)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    per_module = {name: sum(p.numel() for p in child.parameters())
                  for name, child in model.named_children()}
    own = sum(p.numel() for p in model.parameters(recurse=False))
    if own:
        per_module["(own)"] = own
    return {
        "total": total, "trainable": trainable,
        "total_M": total / 1e6, "trainable_M": trainable / 1e6,
        "per_module": per_module, "per_module_M": {k: v / 1e6 for k, v in per_module.items()},
    }
