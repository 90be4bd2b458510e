"""Claims: the numbers the book's prose states, checked and recorded.

Every quantitative sentence in a chapter is backed by a call such as::

    nnbook.claim("lenet-12x-drop", drop_points, upper=1.0,
                 text="LeNet-300-100 pruned to 12x fewer weights loses at most 1 point", unit="points")

which

1. **asserts** the bound, raising ``AssertionError`` with the value, the bound and the
   sentence when it fails (so a reader re-running the chapter with another seed
   sees exactly which statement did not hold);
2. **displays one compact line**, ``claim lenet-12x-drop: 0.42 points <= 1.0 ✓ — LeNet...``;
3. **records** the claim as machine-readable data in the cell output's metadata
   (key ``"nnbook_claim"``): nbval does not compare output metadata and the HTML
   does not show it, but ``tools/build_appendices.py`` reads it to build the
   claims ledger and appendix A from the stored notebooks;
4. when the environment variable ``NNBOOK_CLAIM_LOG`` names a file, **appends**
   one JSON line per claim to it (id, value, bounds, seed, notebook) — this is how
   ``tools/seed_sweep.py`` collects the per-claim minimum and maximum over many
   seeds into ``tests/seed_records/``.

Plain ``assert`` stays the right tool for exact checks (shapes, parameter counts,
closed-form values); ``claim`` is for the statements a reader would quote.
"""
from __future__ import annotations

import fcntl
import json
import math
import numbers
import os
import re

__all__ = ["claim", "format_claim", "CLAIM_METADATA_KEY"]

CLAIM_METADATA_KEY = "nnbook_claim"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


def _number(value, name: str) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        import torch

        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise TypeError(f"claim: {name} must be a single number, got a tensor of shape {tuple(value.shape)}")
            value = value.item()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if not isinstance(value, numbers.Real):
        raise TypeError(f"claim: {name} must be a real number, got {type(value).__name__}")
    return float(value)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.3g}"


def format_claim(id: str, value: float, lower: float | None, upper: float | None, unit: str = "",
                 text: str = "", ok: bool = True) -> str:
    """The one-line display of a claim, e.g. ``claim drop: 0.42 points <= 1 ✓ — text``."""
    u = f" {unit}" if unit else ""
    if lower is not None and upper is not None:
        bound = f"{_fmt(lower)} <= {_fmt(value)}{u} <= {_fmt(upper)}"
    elif lower is not None:
        bound = f"{_fmt(value)}{u} >= {_fmt(lower)}"
    elif upper is not None:
        bound = f"{_fmt(value)}{u} <= {_fmt(upper)}"
    else:  # pragma: no cover - claim() refuses this
        bound = f"{_fmt(value)}{u}"
    mark = "✓" if ok else "✗ FAILED"
    return f"claim {id}: {bound} {mark}" + (f" — {text}" if text else "")


def _log(record: dict) -> None:
    path = os.environ.get("NNBOOK_CLAIM_LOG")
    if not path:
        return
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as fh:  # one short line, appended under a lock
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def claim(id: str, value, *, lower=None, upper=None, text: str = "", unit: str = "",
          display: bool = True) -> None:
    """Assert that ``lower <= value <= upper``, show it as one line, and record it.

    Args:
        id: a short identifier, unique within the chapter: lower-case letters, digits,
            ``.``, ``_`` and ``-`` (for example ``"lenet-12x-drop"``).
        value: the measured number (``float``, ``int``, ``bool`` or a one-element tensor).
            An ordering such as "A beats B" is claimed on the difference ``A - B`` with
            ``lower=0``.
        lower, upper: the bounds (inclusive); at least one is required.
        text: the sentence of the prose this number backs, in a few words.
        unit: the unit shown after the value (``"points"``, ``"ms"``, ``"x"``, ...).
        display: show the one-line summary (in Jupyter as a rich output carrying the
            record in its metadata; elsewhere printed).

    Returns:
        ``None`` (so a cell ending in a claim shows only the claim's line).

    Raises:
        AssertionError: the value is NaN or outside the bounds; the message holds the
            id, the value, the bounds and ``text``.
        TypeError: ``value`` or a bound is not a real number; ``text``/``unit`` not strings.
        ValueError: ``id`` is malformed, no bound was given, or ``lower > upper``.

    Examples:
        >>> claim("demo", 0.93, lower=0.9, text="accuracy above 90 %", display=False)
        >>> claim("demo", 0.5, lower=0.9, display=False)
        Traceback (most recent call last):
        ...
        AssertionError: claim demo: 0.5 >= 0.9 ✗ FAILED
    """
    if not isinstance(id, str) or not _ID.match(id):
        raise ValueError(f"claim: id must be lower-case letters, digits, '.', '_' or '-', got {id!r}")
    if not isinstance(text, str) or not isinstance(unit, str):
        raise TypeError("claim: text and unit must be strings")
    v = _number(value, "value")
    lo = None if lower is None else _number(lower, "lower")
    hi = None if upper is None else _number(upper, "upper")
    if lo is None and hi is None:
        raise ValueError(f"claim {id}: give lower=, upper= or both (a claim without a bound checks nothing)")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"claim {id}: lower={lo} is above upper={hi}")
    ok = not math.isnan(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    line = format_claim(id, v, lo, hi, unit, text, ok)
    from .utils import current_seed

    record = {"id": id, "value": v, "lower": lo, "upper": hi, "unit": unit, "text": text, "ok": ok,
              "seed": current_seed(), "notebook": os.environ.get("NNBOOK_NOTEBOOK", "")}
    _log(record)
    if not ok:
        raise AssertionError(line)
    if display:
        _show(line, record)


def _show(line: str, record: dict) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display as ipy_display

        if get_ipython() is not None:
            import html

            meta = {CLAIM_METADATA_KEY: {k: record[k] for k in ("id", "value", "lower", "upper", "unit", "text")}}
            bundle = {"text/plain": line,
                      "text/html": f'<div class="nnbook-claim"><code>{html.escape(line)}</code></div>'}
            ipy_display(bundle, raw=True, metadata=meta)
            return
    except ImportError:  # pragma: no cover - IPython is always there in a notebook
        pass
    print(line)
