"""Official checkpoints of FastInst, SparseInst and YOLACT as rtinst state dicts.

``convert_official(state, "sparseinst", cfg.model)`` maps every tensor of an official
state dict (:func:`load_official_state` reads one safely) onto the rtinst model that
``cfg.model`` builds, or raises :class:`ConversionError` naming the first key that cannot
be mapped, is missing or has another shape, with the ``-o`` overrides the checkpoint needs.
One module per detector holds its key map and what the conversion does beyond renaming.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from rtinst.models.convert.common import (
    ConversionError,
    Inferred,
    config_hint,
    load_official_state,
    map_state,
)

SOURCES = ("fastinst", "sparseinst", "yolact")


@dataclass
class Conversion:
    state: dict[str, torch.Tensor]  # rtinst key -> tensor, loads strictly into the model
    sources: dict[str, str]  # rtinst key -> official key
    transformed: dict[str, str]  # rtinst key -> what was done beyond renaming
    dropped: list[str]  # official keys deliberately left out (loss buffers)
    notes: list[str]  # official inference settings the weights cannot carry


def _module(source: str):
    if source not in SOURCES:
        raise ConversionError(f"--from {source!r}: unknown model; use one of {', '.join(SOURCES)}")
    return importlib.import_module(f"rtinst.models.convert.{source}")


def infer_config(state: Mapping[str, torch.Tensor], source: str) -> list[Inferred]:
    """The ``model.*`` config values an official checkpoint's shapes give."""
    return _module(source).infer(state)


def convert_official(state: Mapping[str, torch.Tensor], source: str, model_cfg: Any,
                     label: str = "checkpoint") -> Conversion:
    """Map ``state`` (an official ``source`` checkpoint) onto ``build_model(model_cfg)``.
    The model is built without its ImageNet backbone file: the checkpoint holds every weight."""
    from rtinst.models import build_model

    module = _module(source)
    if model_cfg.name != source:
        raise ConversionError(f"{label}: --from {source} but the config builds "
                              f"model.name={model_cfg.name!r}; use a {source} config")
    if not any(k.startswith(module.SIGNATURE) for k in state):
        guess = [s for s in SOURCES if any(k.startswith(_module(s).SIGNATURE) for k in state)]
        hint = f"it looks like a {guess[0]} checkpoint: use --from {guess[0]}" if guess else (
            "is it an official checkpoint?")
        raise ConversionError(f"{label}: not an official {source} checkpoint (no "
                              f"'{module.SIGNATURE}*' keys); {hint}")
    built = replace(model_cfg, backbone=replace(model_cfg.backbone, pretrained="none"))
    target = build_model(built).state_dict()
    mapped = map_state(state, target, module.rules(model_cfg), module.dropped,
                       lambda: config_hint(module.infer(state), model_cfg), label)
    return Conversion(mapped.state, mapped.sources, mapped.transformed, mapped.dropped,
                      module.official_settings(model_cfg))


__all__ = ["SOURCES", "Conversion", "ConversionError", "convert_official", "infer_config",
           "load_official_state"]
