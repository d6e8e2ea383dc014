"""Notebook parameters as papermill and the CLI pass them.

``papermill -p overrides train.max_iters=6`` hands a table or run notebook a string where the
notebook's default is a list; iterating it would give single characters. Overrides are
therefore accepted as a list or as one string, separated by ``;`` or by ``,`` where the next
piece starts a new ``key=`` (a YAML list value such as ``data.train_short_edge=[320, 352]``
keeps its commas).
"""

from __future__ import annotations

import re
from typing import Iterable

from rtinst.errors import UserError

_NEXT_KEY = re.compile(r"\s*[A-Za-z_][\w.]*\s*=")


def parse_overrides(value: str | Iterable[str] | None) -> list[str]:
    """``"a=1,b.c=[1, 2];d=x"`` -> ``["a=1", "b.c=[1, 2]", "d=x"]``; a list is kept (each item
    stripped); None or ``""`` -> ``[]``."""
    if value is None:
        return []
    if not isinstance(value, str):
        items = list(value)
        bad = [v for v in items if not isinstance(v, str)]
        if bad:
            raise UserError(f"overrides: expected KEY=VALUE strings, got {bad[0]!r}")
        return [v.strip() for v in items if v.strip()]
    out, depth, start = [], 0, 0
    for i, ch in enumerate(value):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif depth == 0 and (ch == ";" or (ch == "," and _NEXT_KEY.match(value, i + 1))):
            out.append(value[start:i])
            start = i + 1
    out.append(value[start:])
    out = [piece.strip() for piece in out if piece.strip()]
    bad = [piece for piece in out if "=" not in piece]
    if bad:
        raise UserError(f"overrides: {bad[0]!r} is not KEY=VALUE (give e.g. "
                        "'train.max_iters=6,train.lr=1e-4' or a list)")
    return out
