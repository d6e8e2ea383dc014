"""Reading official checkpoints safely and mapping their tensors onto an rtinst model.

A converter describes, for every tensor of the rtinst model built from the user's config,
which official tensor it comes from (:class:`Source`: a key and an optional transform for
what is more than a rename: a q/k/v slice of a packed attention projection, a channel
reorder, a normalisation folded into the stem). :func:`map_state` then checks the whole
checkpoint before converting anything and refuses, in one line naming the first offending
key, a key nothing consumes, a key the model needs but the checkpoint lacks, or a shape
mismatch; the line ends with the config the checkpoint needs, read from its shapes.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from rtinst.errors import UserError


class ConversionError(UserError):
    """An official checkpoint that cannot become this rtinst model; names the key."""


State = Mapping[str, torch.Tensor]
Transform = Callable[[torch.Tensor, State], torch.Tensor]


@dataclass(frozen=True)
class Source:
    """Where one rtinst tensor comes from: an official key, and how it is changed."""

    key: str
    transform: Optional[Transform] = None
    note: str = ""  # what the transform does, for the conversion report


@dataclass(frozen=True)
class Inferred:
    """One config value read from a checkpoint's shapes: ``model.<key>`` = ``value``."""

    key: str
    value: Any
    phrase: str  # "3 decoder layers": reads after "checkpoint has"


@dataclass
class Rules:
    """Ordered (rtinst key regex -> official key template) rules; the first full match wins.
    A template may use the regex's groups (``\\1``); a callable gets the match."""

    rules: list[tuple[re.Pattern, Callable[[re.Match], Optional[Source]]]] = field(default_factory=list)

    def add(self, pattern: str, template: str | Callable[[re.Match], Optional[Source]],
            transform: Optional[Transform] = None, note: str = "") -> "Rules":
        if isinstance(template, str):
            def build(m: re.Match, t=template) -> Source:
                return Source(m.expand(t), transform, note)
        else:
            build = template
        self.rules.append((re.compile(pattern), build))
        return self

    def source(self, key: str) -> Optional[Source]:
        for pattern, build in self.rules:
            m = pattern.fullmatch(key)
            if m:
                return build(m)
        return None


# --------------------------------------------------------------------------- loading

# What a detectron2 .pkl checkpoint may reference: numpy arrays and their dtypes only.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles (Python 2's detectron files) store bytes
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but numpy arrays: a pickle cannot run code through it."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS or (module == "numpy" and name.endswith("DType")) \
                or (module in ("numpy.dtypes", "numpy._core.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only numpy arrays "
                                     f"are allowed in a .pkl checkpoint)")


def _to_tensor(value: Any, key: str, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (np.generic, int, float)):
        return torch.tensor(np.asarray(value))
    raise ConversionError(f"{path}: '{key}' is a {type(value).__name__}, not a tensor or array")


def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights dict of an official checkpoint: a detectron2 ``.pth``/``.pkl`` (under
    ``"model"``) or YOLACT's bare ``.pth`` state dict. ``.pth`` goes through
    ``torch.load(weights_only=True)``, ``.pkl`` through an unpickler that allows numpy
    arrays only. Optimizer / scheduler / iteration entries are ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = _ArraysOnlyUnpickler(f, encoding="latin1").load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the file's problem
        raise ConversionError(f"{path}: cannot read checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{path}: expected a state dict (or a dict with 'model'), "
                              f"got {type(data).__name__}")
    prefixed = [k for k in data if isinstance(k, str) and k.startswith("module.")]
    if prefixed and len(prefixed) == len(data):  # saved from a DistributedDataParallel wrapper
        data = {k[len("module."):]: v for k, v in data.items()}
    return {str(k): _to_tensor(v, str(k), path) for k, v in data.items()}


# --------------------------------------------------------------------------- mapping

def config_hint(inferred: list[Inferred], model_cfg: Any) -> str:
    """``checkpoint has 3 decoder layers: use -o model.decoder_layers=3`` for every value
    the checkpoint's shapes give that the config does not have."""
    diff = [i for i in inferred if _get(model_cfg, i.key) != i.value]
    if not diff:
        return ("its shapes match this config, so it is not the official model definition "
                "rtinst maps (see rtinst/models/convert/)")
    has = ", ".join(i.phrase for i in diff)
    use = " ".join(f"-o model.{i.key}={_yaml(i.value)}" for i in diff)
    return f"checkpoint has {has}: use {use}"


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass
class Mapped:
    state: dict[str, torch.Tensor]
    sources: dict[str, str]  # rtinst key -> official key
    dropped: list[str]  # official keys deliberately not converted (loss buffers)
    transformed: dict[str, str]  # rtinst key -> what the transform did


def map_state(official: State, target: State, rules: Rules, dropped: Callable[[str], bool],
              hint: Callable[[], str], label: str) -> Mapped:
    """Every tensor of ``target`` from ``official`` through ``rules``, or a ConversionError
    naming the first key that is unmappable, missing, or of another shape (in that order)."""
    plan: dict[str, Source] = {}
    for key in target:
        src = rules.source(key)
        if src is None:
            raise ConversionError(f"{label}: rtinst key '{key}' has no counterpart in official "
                                  f"checkpoints; {hint()}")
        plan[key] = src
    consumed = {s.key for s in plan.values()}
    for key in official:
        if key not in consumed and not dropped(key):
            raise ConversionError(f"{label}: cannot map checkpoint key '{key}' onto this "
                                  f"config's model; {hint()}")
    for key, src in plan.items():
        if src.key not in official:
            raise ConversionError(f"{label}: checkpoint lacks '{src.key}' (for rtinst "
                                  f"'{key}'); {hint()}")
    state, transformed = {}, {}
    for key, src in plan.items():
        value = official[src.key]
        if src.transform is not None:
            try:
                value = src.transform(value, official)
            except (RuntimeError, IndexError, ValueError) as e:
                raise ConversionError(f"{label}: checkpoint key '{src.key}' of shape "
                                      f"{list(official[src.key].shape)} cannot be converted for "
                                      f"'{key}' ({e}); {hint()}") from None
            transformed[key] = src.note
        want = target[key]
        if tuple(value.shape) != tuple(want.shape):
            raise ConversionError(f"{label}: checkpoint key '{src.key}' has shape "
                                  f"{list(official[src.key].shape)} but this config needs "
                                  f"{list(want.shape)} for '{key}'; {hint()}")
        state[key] = value.to(want.dtype).clone()
    return Mapped(state, {k: s.key for k, s in plan.items()},
                  [k for k in official if k not in consumed], transformed)


def qkv_slice(index: int, dim: int) -> Transform:
    """Rows ``index*dim .. (index+1)*dim`` of a packed ``in_proj`` (q; k; v stacked)."""
    def take(t: torch.Tensor, _: State) -> torch.Tensor:
        if t.shape[0] != 3 * dim:
            raise ValueError(f"packed q/k/v needs {3 * dim} rows")
        return t[index * dim:(index + 1) * dim]
    return take


def count_indices(state: State, pattern: str) -> int:
    """How many distinct ``(\\d+)`` values ``pattern`` (a regex with one group) matches."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})
