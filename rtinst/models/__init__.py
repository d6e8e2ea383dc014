"""Model library: backbones, necks, heads and the three detectors.

Every detector is an ``nn.Module`` built from its config dataclass and called as
``model(images, targets)``: a dict of scalar losses in training mode, a list of per-image
prediction dicts in eval mode (``scores``, ``labels``, ``mask_probs``, see
``rtinst.engine.inference``).
"""

from __future__ import annotations

import importlib

from torch import nn

from rtinst.errors import UserError

# model.name -> "module:class"; imported on demand so one model's import cost is not everyone's.
DETECTORS = {
    "yolact": "rtinst.models.yolact:Yolact",
    "sparseinst": "rtinst.models.sparseinst:SparseInst",
    "fastinst": "rtinst.models.fastinst:FastInst",
}


def build_model(cfg) -> nn.Module:
    """Build the detector of a model config (``RunConfig.model``)."""
    module_name, class_name = DETECTORS[cfg.name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise UserError(f"model.name={cfg.name!r}: this model is not part of this rtinst "
                        f"version yet") from None
    return getattr(module, class_name)(cfg)
