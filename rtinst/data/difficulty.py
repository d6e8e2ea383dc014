"""How hard the synthetic images are: named levels and their knobs (no heavy imports, so the
command line can list them without loading the generator)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Optional

from rtinst.errors import UserError, did_you_mean

TEXTURES = ("solid", "stripes", "dots", "checker", "gradient")
REFERENCE_SIZE = 320  # the embedded dataset's long edge
CLUTTER_LEVELS = ("none", "light", "full")


@dataclass(frozen=True)
class Difficulty:
    """What makes an image hard. The defaults are the ``hard`` level (the embedded dataset).

    ``objects``: objects planned per image, uniform in [min, max] (a same-class partner and a
    crowd region may add one each; rejected placements remove some). ``object_size``: None
    for the COCO-like area mixture (``rtinst.data.synthetic_draw.AREA_MIXTURE``), else the
    range of sqrt(area) in pixels at the stored size, sampled log-uniformly. ``textures``: the
    object textures drawn from. ``clutter``: the background, ``full`` (smooth colour field,
    faint texture, blobs, lines and scribbles), ``light`` (the smooth field and faint texture
    only) or ``none`` (one flat colour); every level adds pixel noise. ``size``: the long
    image edge.
    ``pair_probability``: chance that an image holds a touching same-class pair;
    ``crowd_probability``: chance of an ``iscrowd=1`` cluster; ``occlusion``: False rejects
    any placement that would overlap an object already placed (a crowd region included).
    """

    objects: tuple[int, int] = (4, 10)
    object_size: Optional[tuple[float, float]] = None
    textures: tuple[str, ...] = TEXTURES
    clutter: Literal["none", "light", "full"] = "full"
    size: int = REFERENCE_SIZE
    pair_probability: float = 0.4
    crowd_probability: float = 0.05
    occlusion: bool = True

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DIFFICULTIES: dict[str, Difficulty] = {
    "hard": Difficulty(),
    # between the two: more and smaller objects (about half COCO-small), three textures that
    # keep a shape's outline whole, the background's colour field without blobs and lines
    "medium": Difficulty(objects=(3, 7), object_size=(16.0, 80.0),
                         textures=("solid", "stripes", "gradient"), clutter="light", size=192),
    # solid shapes, few and mid-sized, on a flat noisy background
    "easy": Difficulty(objects=(2, 4), object_size=(28.0, 80.0), textures=("solid",),
                       clutter="none", size=192),
}
# easy with every object COCO-medium (6-12 cells across on a 1/8 feature grid): the level at
# which SparseInst's instance activation maps focus on their objects (paper Fig. 4)
DIFFICULTIES["easy-large"] = replace(DIFFICULTIES["easy"], object_size=(48.0, 96.0))
DEFAULT_DIFFICULTY = "hard"


# What each part of a level is called where the user set it: on the command line ...
FLAGS = {"level": "--difficulty", "size": "--size", "objects": "--objects",
         "object_size": "--object-size", "textures": "--textures", "clutter": "--clutter",
         "pair_probability": "--pairs", "crowd_probability": "--crowds", "occlusion": "--no-occlusion"}
# ... and in a run config (rtinst.config.DataConfig), where the size is data.synthetic_size.
KNOBS = tuple(f.name for f in fields(Difficulty) if f.name != "size")
CONFIG_KEYS = {"level": "data.synthetic_difficulty", "size": "data.synthetic_size",
               **{k: f"data.synthetic_knobs.{k}" for k in KNOBS}}


def resolve_difficulty(level: str = DEFAULT_DIFFICULTY, **knobs: Any) -> Difficulty:
    """The named level with the knobs that are not None replaced; checked, with one-line errors
    naming the command-line options."""
    return _checked(_level(level, FLAGS), {k: v for k, v in knobs.items() if v is not None}, FLAGS)


def _level(level: str, names: dict[str, str]) -> Difficulty:
    if level not in DIFFICULTIES:
        raise UserError(f"{names['level']}: unknown level {level!r} (choose from {', '.join(DIFFICULTIES)})")
    return DIFFICULTIES[level]


def _checked(base: Difficulty, knobs: dict[str, Any], names: dict[str, str]) -> Difficulty:
    d = replace(base, **knobs)
    lo, hi = d.objects
    if not 1 <= lo <= hi:
        raise UserError(f"{names['objects']}: need 1 <= MIN <= MAX, got {lo}-{hi}")
    if d.object_size is not None and not 4 <= d.object_size[0] <= d.object_size[1]:
        raise UserError(f"{names['object_size']}: need 4 <= MIN <= MAX pixels, got "
                        f"{d.object_size[0]:g}-{d.object_size[1]:g}")
    unknown = [t for t in d.textures if t not in TEXTURES]
    if unknown or not d.textures:
        raise UserError(f"{names['textures']}: need one or more of {', '.join(TEXTURES)}, got "
                        f"{','.join(d.textures) or 'none'}")
    if d.clutter not in CLUTTER_LEVELS:
        raise UserError(f"{names['clutter']}: unknown level {d.clutter!r} (choose from "
                        f"{', '.join(CLUTTER_LEVELS)})")
    for name in ("pair_probability", "crowd_probability"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise UserError(f"{names[name]}: a probability in [0, 1], got {getattr(d, name):g}")
    if d.size < 64:
        raise UserError(f"{names['size']} must be at least 64 pixels, got {d.size}")
    if d.object_size is not None and d.object_size[1] > 0.6 * d.size:
        if "object_size" not in knobs:  # the level's own object sizes, broken by a small size
            raise UserError(f"{names['size']}: {d.size} px is too small for the level's objects of "
                            f"up to {d.object_size[1]:g} px (they need at most 0.6 x the size)")
        raise UserError(f"{names['object_size']}: MAX {d.object_size[1]:g} px does not fit a {d.size} px "
                        f"image (at most 0.6 x {names['size']})")
    return d


def _pair(v: Any, kind: type) -> Optional[tuple]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        return None
    if not all(isinstance(x, (int, float) if kind is float else int) and not isinstance(x, bool)
               for x in v):
        return None
    return tuple(kind(x) for x in v)


def _knob_value(key: str, value: Any) -> tuple[Any, str]:
    """A config knob as the Difficulty field holds it (YAML lists become tuples), or None when
    the value has the wrong type, with what the key expects."""
    if key == "objects":
        return _pair(value, int), "[MIN, MAX] integers"
    if key == "object_size":
        return _pair(value, float), "null or [MIN, MAX] pixels"
    if key == "textures":
        ok = isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value)
        return (tuple(value) if ok else None), "a list of texture names"
    if key == "clutter":
        return (value if isinstance(value, str) else None), f"one of {', '.join(CLUTTER_LEVELS)}"
    if key == "occlusion":
        return (value if isinstance(value, bool) else None), "true or false"
    if key in ("pair_probability", "crowd_probability"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value) if number else None), "a probability in [0, 1]"
    raise AssertionError(f"Difficulty field {key!r} has no config conversion")


def config_difficulty(data: Any) -> Difficulty:
    """The synthetic images a run config's data section (``DataConfig``) wants: level
    ``data.synthetic_difficulty`` at ``data.synthetic_size``, with ``data.synthetic_knobs``
    replacing parts of it. Errors are one-line ``ConfigError`` naming the config key."""
    # imported here: the generator's worker processes import this module and need no config
    from rtinst.config import ConfigError

    knobs: dict[str, Any] = {}
    for key, value in (data.synthetic_knobs or {}).items():
        if key not in KNOBS:
            hint = did_you_mean(str(key), list(KNOBS), prefix="data.synthetic_knobs.",
                                listing="knobs")
            raise ConfigError(f"unknown key 'data.synthetic_knobs.{key}'{hint}")
        if key == "object_size" and value is None:
            knobs[key] = None  # the COCO-like area mixture instead of the level's range
            continue
        knobs[key], expected = _knob_value(key, value)
        if knobs[key] is None:
            raise ConfigError(f"{CONFIG_KEYS[key]}: expected {expected}, got {value!r}")
    try:
        return _checked(_level(data.synthetic_difficulty, CONFIG_KEYS),
                        {**knobs, "size": data.synthetic_size}, CONFIG_KEYS)
    except UserError as e:
        raise ConfigError(str(e)) from None
