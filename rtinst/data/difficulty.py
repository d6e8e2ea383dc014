"""How hard the synthetic images are: named levels and their knobs (no heavy imports, so the
command line can list them without loading the generator)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Optional

from rtinst.errors import UserError

TEXTURES = ("solid", "stripes", "dots", "checker", "gradient")
REFERENCE_SIZE = 320  # the embedded dataset's long edge
CLUTTER_LEVELS = ("none", "light", "full")


@dataclass(frozen=True)
class Difficulty:
    """What makes an image hard. The defaults are the ``hard`` level (the embedded dataset).

    ``objects``: objects planned per image, uniform in [min, max] (a same-class partner and a
    crowd region may add one each; rejected placements remove some). ``object_size``: None
    for the COCO-like area mixture (``rtinst.data.synthetic.AREA_MIXTURE``), else the range of sqrt(area) in
    pixels at the stored size, sampled log-uniformly. ``textures``: the object textures drawn
    from. ``clutter``: the background, ``full`` (smooth colour field, faint texture, blobs,
    lines and scribbles), ``light`` (the smooth field and faint texture only) or ``none`` (one
    flat colour); every level adds pixel noise. ``size``: the long image edge.
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
DEFAULT_DIFFICULTY = "hard"


def resolve_difficulty(level: str = DEFAULT_DIFFICULTY, **knobs: Any) -> Difficulty:
    """The named level with the knobs that are not None replaced; checked, with one-line errors."""
    if level not in DIFFICULTIES:
        raise UserError(f"--difficulty: unknown level {level!r} (choose from {', '.join(DIFFICULTIES)})")
    d = replace(DIFFICULTIES[level], **{k: v for k, v in knobs.items() if v is not None})
    lo, hi = d.objects
    if not 1 <= lo <= hi:
        raise UserError(f"--objects: need 1 <= MIN <= MAX, got {lo}-{hi}")
    if d.object_size is not None and not 4 <= d.object_size[0] <= d.object_size[1]:
        raise UserError(f"--object-size: need 4 <= MIN <= MAX pixels, got "
                        f"{d.object_size[0]:g}-{d.object_size[1]:g}")
    unknown = [t for t in d.textures if t not in TEXTURES]
    if unknown or not d.textures:
        raise UserError(f"--textures: need one or more of {', '.join(TEXTURES)}, got "
                        f"{','.join(d.textures) or 'none'}")
    if d.clutter not in CLUTTER_LEVELS:
        raise UserError(f"--clutter: unknown level {d.clutter!r} (choose from {', '.join(CLUTTER_LEVELS)})")
    for name in ("pair_probability", "crowd_probability"):
        if not 0.0 <= getattr(d, name) <= 1.0:
            raise UserError(f"--{name.split('_')[0]}s: a probability in [0, 1], got {getattr(d, name):g}")
    if d.size < 64:
        raise UserError(f"--size must be at least 64 pixels, got {d.size}")
    if d.object_size is not None and d.object_size[1] > 0.6 * d.size:
        raise UserError(f"--object-size: MAX {d.object_size[1]:g} px does not fit a {d.size} px image "
                        f"(at most 0.6 x --size)")
    return d
