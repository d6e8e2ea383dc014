"""Checkpoints: written atomically, read with ``weights_only=True``, resumable.

A checkpoint holds model, optimizer, scheduler and (when used) AMP scaler state, the
iteration reached and the RNG states, so a resumed run continues exactly where the killed
one stopped. ``last.pt`` is replaced atomically: a kill at any moment leaves either the
previous or the new checkpoint, never a truncated one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtinst.errors import UserError
from rtinst.io import atomic_torch_save

LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    # numpy's key array is stored as a tensor so that weights_only loading accepts it.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state: Any) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from None
