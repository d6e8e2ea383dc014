"""Recipe check: a resolved config beside the official training recipe of its model.

The official values live in ``rtinst/configs/official_recipes.yaml`` (one section per model,
dotted key -> value, source, optional accepted deviation). :func:`check_recipe` compares a
resolved :class:`~rtinst.config.RunConfig` with its model's section, one
:class:`RecipeLine` per key; an unrecorded difference is ``DIFF``. Values are compared in
the units the training loop uses: ``train.steps`` as iterations (fractions of
``max_iters`` resolved), so ``[0.9, 0.95]`` and the iterations they mean are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rtinst.config_schema import RunConfig, step_iterations
from rtinst.errors import UserError

OFFICIAL_RECIPES = Path(__file__).parent / "configs" / "official_recipes.yaml"

OK, DIFF, ACCEPTED, NOT_IN_BUILD = "ok", "DIFF", "accepted", "not in this build"
MISSING = object()


class RecipeError(UserError):
    """The official-recipe file is malformed or names a key no config has."""


@dataclass(frozen=True)
class RecipeLine:
    key: str
    ours: Any  # MISSING where this build has no such field
    official: Any
    status: str  # ok | DIFF | accepted | not in this build
    source: str
    reason: str = ""

    def render(self, widths: tuple[int, int, int]) -> str:
        ours = "-" if self.ours is MISSING else _show(self.ours)
        mark = f"{ACCEPTED}: {self.reason}" if self.status == ACCEPTED else self.status
        kw, ow, fw = widths
        return f"{self.key:<{kw}}  {ours:<{ow}}  {_show(self.official):<{fw}}  [{mark}]  {self.source}"


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def load_official(path: str | Path = OFFICIAL_RECIPES) -> dict[str, dict[str, dict]]:
    """Read and validate the official-recipe file (``yaml.safe_load``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the official recipes: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected one mapping per model at the top level")
    for model, section in data.items():
        if not isinstance(section, dict):
            raise RecipeError(f"{path}: section '{model}' must map dotted keys to entries")
        for key, entry in section.items():
            where = f"{path}: {model}.{key}"
            if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
                raise RecipeError(f"{where}: expected {{value: ..., source: ...}}")
            unknown = set(entry) - {"value", "source", "deviation", "optional"}
            if unknown:
                raise RecipeError(f"{where}: unknown field(s) {sorted(unknown)}")
            dev = entry.get("deviation")
            if dev is not None and (not isinstance(dev, dict) or set(dev) != {"ours", "reason"}
                                    or not dev["reason"]):
                raise RecipeError(f"{where}: deviation must be {{ours: <preset value>, reason: <why>}}")
    return data


def resolve(cfg: RunConfig, key: str) -> Any:
    """Value of a dotted key in the units the run uses, or ``MISSING`` if no such field."""
    if key == "train.steps":
        return step_iterations(cfg.train)
    node: Any = cfg
    for part in key.split("."):
        if not hasattr(node, "__dataclass_fields__") or part not in node.__dataclass_fields__:
            return MISSING
        node = getattr(node, part)
    return node


def same(a: Any, b: Any) -> bool:
    """Config-value equality: numbers within float rounding, lists item by item, bool is not 1."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check_recipe(cfg: RunConfig, official: dict[str, dict[str, dict]] | None = None,
                 path: str | Path = OFFICIAL_RECIPES) -> list[RecipeLine]:
    """One line per official key of ``cfg``'s model; raises if a required key is unknown."""
    official = load_official(path) if official is None else official
    model = cfg.model.name
    if model not in official:
        raise RecipeError(f"{path}: no official recipe for model '{model}' "
                          f"(sections: {', '.join(sorted(official))})")
    lines = []
    for key, entry in official[model].items():
        ours = resolve(cfg, key)
        value, source = entry["value"], entry["source"]
        if ours is MISSING:
            if not entry.get("optional"):
                raise RecipeError(f"{path}: {model}.{key}: no such config key "
                                  "(mark it `optional: true` if only newer builds have it)")
            lines.append(RecipeLine(key, ours, value, NOT_IN_BUILD, source))
            continue
        dev = entry.get("deviation")
        if same(ours, value):
            status, reason = OK, ""
        elif dev is not None and same(ours, dev["ours"]):
            status, reason = ACCEPTED, dev["reason"]
        else:
            status, reason = DIFF, ""
        lines.append(RecipeLine(key, ours, value, status, source, reason))
    return lines


def format_recipe(lines: list[RecipeLine]) -> str:
    def width(items: list[str]) -> int:
        return max((len(s) for s in items), default=0)

    widths = (width([ln.key for ln in lines]),
              width(["-" if ln.ours is MISSING else _show(ln.ours) for ln in lines]),
              width([_show(ln.official) for ln in lines]))
    return "\n".join(ln.render(widths) for ln in lines) + "\n"
