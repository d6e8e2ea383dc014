"""A detector factory from outside rtinst, named by $RTINST_BUILD_MODEL.

"path/to/file.py:factory" or "package.module:factory" builds every detector of a sweep
instead of ``rtinst.models.build_model`` (tests register a toy detector this way; the
variable reaches papermill kernels and pool workers through the environment).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

BUILD_MODEL_ENV = "RTINST_BUILD_MODEL"


def model_builder() -> Callable | None:
    """The detector factory named by $RTINST_BUILD_MODEL, or None (rtinst's own models)."""
    spec = os.environ.get(BUILD_MODEL_ENV)
    if not spec:
        return None
    import importlib
    import importlib.util

    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        mod_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def build_detector(model_cfg):
    """The detector for ``model_cfg``: $RTINST_BUILD_MODEL's factory when set, else rtinst's."""
    builder = model_builder()
    if builder is not None:
        return builder(model_cfg)
    from rtinst.models import build_model

    return build_model(model_cfg)
