"""The book's records: claims and results tables, written by the chapters and read back.

This module is the one home of the contract between the chapters and everything that reads
them (the claims ledger, appendix A, chapter 11, the seed sweeps):

* **Writing.** :func:`claim` checks a number the prose states and records it; ``nnbook.plot.table(df,
  record="family")`` records a results table through :func:`table_record`. Both records travel in the
  metadata of the cell output that shows them, under :data:`CLAIM_METADATA_KEY` and
  :data:`TABLE_METADATA_KEY` (nbval does not compare output metadata and the HTML does not show it).
* **Reading.** :func:`read_chapter` / :func:`read_book` read those records back from stored
  notebooks, in ``_toc.yml`` order (:func:`toc_chapters`), joined with each chapter's seed record
  ``tests/seed_records/<stem>.json`` (written by ``tools/seed_sweep.py``). Each chapter is a
  :class:`Chapter`.
* **The shipped ledger.** ``tools/build_appendices.py`` writes what :func:`read_book` reads, trimmed to
  the fields below, into the package as ``nnbook/resources/ledger.json`` (:func:`dumps_book`), and its
  ``--check`` fails when that file is stale. :func:`load_book` reads it back, so code that studies the
  book's claims (chapter 11) runs wherever ``nnbook`` is installed, without the repository's notebooks.

A claim, in detail. Every quantitative sentence in a chapter is backed by a call such as::

    nnbook.claim("lenet-12x-drop", drop_points, upper=1.0,
                 text="LeNet-300-100 pruned to 12x fewer weights loses at most 1 point", unit="points")

which

1. **asserts** the bound, raising ``AssertionError`` with the value, the bound and the
   sentence when it fails (so a reader re-running the chapter with another seed
   sees exactly which statement did not hold);
2. **displays one compact line**, ``claim lenet-12x-drop: 0.42 points <= 1.0 ✓ — LeNet...``;
3. **records** the claim as machine-readable data in the cell output's metadata
   (key ``"nnbook_claim"``: id, value, lower, upper, unit, text), which :func:`read_chapter` reads;
4. when the environment variable ``NNBOOK_CLAIM_LOG`` names a file, **appends**
   one JSON line per claim to it (id, value, bounds, seed, notebook) — this is how
   ``tools/seed_sweep.py`` collects the per-claim minimum and maximum over many
   seeds into ``tests/seed_records/``. There ``NNBOOK_CLAIM_CONTINUE=1`` also makes a failing
   claim log itself as failed and return instead of raising, so one sweep run measures every
   claim of the chapter (the sweep counts the run as failed). Nothing else sets it.

Plain ``assert`` stays the right tool for exact checks (shapes, parameter counts,
closed-form values); ``claim`` is for the statements a reader would quote.

The shipped ledger (``nnbook/resources/ledger.json``) holds, per chapter in book order: ``path``,
``title``, ``claims`` (as stored: id, value, lower, upper, unit, text), ``tables`` (as recorded) and
``seeds``: ``None`` when the chapter was never swept, else ``{"seeds": [seeds tried], "claims": {id:
{"n_seeds_ok", "seeds_failed", "min", "max"[, "mean", "std"]}}}`` for the claims the chapter makes
(``mean``/``std`` only where the seed record has them).
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLAIM_METADATA_KEY", "TABLE_METADATA_KEY", "LEDGER_RESOURCE", "Chapter", "claim", "format_claim",
           "table_record", "display_record", "toc_chapters", "read_chapter", "read_book", "dumps_book",
           "load_book"]

CLAIM_METADATA_KEY = "nnbook_claim"  # output metadata of a claim's line
TABLE_METADATA_KEY = "nnbook_table"  # output metadata of a recorded results table
LEDGER_RESOURCE = "resources/ledger.json"  # the shipped ledger, relative to the package folder
LEDGER_FORMAT = 1
_CLAIM_FIELDS = ("id", "value", "lower", "upper", "unit", "text")
_SEED_FIELDS = ("n_seeds_ok", "seeds_failed", "min", "max", "mean", "std")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


# --------------------------------------------------------------------------- showing a record
def display_record(plain: str, html: str, key: str, record: dict) -> bool:
    """Show ``plain``/``html`` as one rich output carrying ``record`` in its metadata under ``key``.

    The one display path of both recorders (:func:`claim`'s line and ``plot.table(record=)``).

    Returns:
        ``True`` when shown (inside IPython); ``False`` elsewhere, where nothing is shown and the
        caller decides what to do (``claim`` prints its line, ``table`` returns its ``Styler``).

    Raises:
        ValueError: ``key`` is not one of the book's two metadata keys.
    """
    if key not in (CLAIM_METADATA_KEY, TABLE_METADATA_KEY):
        raise ValueError(f"display_record: key must be {CLAIM_METADATA_KEY!r} or {TABLE_METADATA_KEY!r}, got {key!r}")
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return False
    if get_ipython() is None:
        return False
    display({"text/plain": plain, "text/html": html}, raw=True, metadata={key: record})
    return True


# --------------------------------------------------------------------------- claims
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
    """The one-line display of a claim, e.g. ``claim drop: 0.42 points <= 1 ✓ — text``.

    Examples:
        >>> format_claim("drop", 0.42, None, 1.0, "points", "small drop")
        'claim drop: 0.42 points <= 1 ✓ — small drop'
        >>> format_claim("acc", 0.5, 0.9, None, ok=False)
        'claim acc: 0.5 >= 0.9 ✗ FAILED'
    """
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
    from filelock import FileLock  # portable (no fcntl on Windows); also what nnbook.cache uses

    with FileLock(path + ".lock"), open(path, "a", encoding="utf-8") as fh:  # one line, under a lock
        fh.write(line)
        fh.flush()


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
        if os.environ.get("NNBOOK_CLAIM_CONTINUE") == "1" and os.environ.get("NNBOOK_CLAIM_LOG"):
            print(line)  # a seed sweep measures the claims after this one; the sweep fails the seed
            return
        raise AssertionError(line)
    if display:
        _show(line, record)


def _show(line: str, record: dict) -> None:
    import html

    shown = display_record(line, f'<div class="nnbook-claim"><code>{html.escape(line)}</code></div>',
                           CLAIM_METADATA_KEY, {k: record[k] for k in _CLAIM_FIELDS})
    if not shown:
        print(line)


# --------------------------------------------------------------------------- results tables
def _json_cell(v):
    """A table cell as JSON: numbers as float/int, NaN/None as None, anything else as str."""
    if v is None:
        return None
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return None if math.isnan(f) else f
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def table_record(df, family: str, caption: str | None = None) -> dict:
    """The machine-readable form of a results table that ``nnbook.plot.table`` stores with ``record=``.

    Returns:
        ``{"family": family, "caption": caption, "columns": [str, ...], "rows": [[cell, ...], ...]}``
        with numbers as ``int``/``float``, missing values as ``None`` and other cells as ``str``.

    Examples:
        >>> import pandas as pd
        >>> table_record(pd.DataFrame({"model": ["a"], "params": [3]}), "demo")["rows"]
        [['a', 3]]
    """
    return {"family": family, "caption": caption, "columns": [str(c) for c in df.columns],
            "rows": [[_json_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]}


# --------------------------------------------------------------------------- reading
@dataclass
class Chapter:
    """What one chapter notebook recorded.

    Attributes:
        path: the notebook, relative to the book's root (``chapters/04_pruning.ipynb``).
        title: the text of its first ``# `` heading (the file's stem when it has none).
        claims: the claim records in cell order (id, value, lower, upper, unit, text).
        tables: the tables recorded by ``plot.table(record=)``, in cell order.
        seeds: the chapter's seed record (``tests/seed_records/<stem>.json``; the shipped ledger keeps
            the summary fields only), or ``None`` when it was never swept.
        displayed_tables: the HTML of book tables displayed *without* ``record=`` (appendix A reads
            them back where a chapter recorded none). Empty for chapters from :func:`load_book`.
    """

    path: Path
    title: str
    claims: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    seeds: dict | None = None
    displayed_tables: list = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def doc(self) -> str:
        """The page name (``chapters/04_pruning``), as ``{doc}`` links and ``_toc.yml`` write it."""
        return str(self.path.with_suffix("")).replace("\\", "/")

    @property
    def seeds_tried(self) -> int | None:
        """How many seeds the chapter's sweep ran; ``None`` when never swept."""
        return None if not self.seeds else len(self.seeds.get("seeds") or [])

    def seed_record(self, claim_id: str) -> dict | None:
        """One claim's summary over the seeds, or ``None`` when the sweep has no record of it.

        Returns ``{"n_seeds_ok", "seeds_failed", "min", "max", "mean", "std"}``; ``min``/``max`` are
        ``None`` when no seed gave a finite value, ``mean``/``std`` are ``None`` in records written
        before the sweep stored them. Both seed-record formats are read (with or without ``values``).
        """
        rec = ((self.seeds or {}).get("claims") or {}).get(claim_id)
        if rec is None:
            return None
        return {"n_seeds_ok": int(rec.get("n_seeds_ok", len(rec.get("seeds_ok") or []))),
                "seeds_failed": list(rec.get("seeds_failed") or []),
                "min": rec.get("min"), "max": rec.get("max"), "mean": rec.get("mean"), "std": rec.get("std")}


def toc_chapters(root: Path) -> list[Path]:
    """Chapter notebooks in ``_toc.yml`` order, then the other ``chapters/*.ipynb`` by name (paths relative to ``root``)."""
    root = Path(root)
    listed: list[Path] = []
    toc = root / "_toc.yml"
    if toc.is_file():
        for m in re.finditer(r"^\s*-?\s*file:\s*(\S+)\s*$", toc.read_text(encoding="utf-8"), re.M):
            p = Path(m.group(1).strip("'\""))
            p = p if p.suffix else p.with_suffix(".ipynb")
            if p.parts and p.parts[0] == "chapters" and (root / p).is_file() and p not in listed:
                listed.append(p)
    folder = root / "chapters"
    rest = sorted(p.relative_to(root) for p in folder.glob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts) if folder.is_dir() else []
    return listed + [p for p in rest if p not in listed]


def read_chapter(root: Path, rel: Path) -> Chapter:
    """The records of the stored notebook ``root / rel``, with its seed record when there is one.

    An unreadable seed record (for example one being rewritten by hand) counts as none.

    Examples:
        >>> import json, tempfile
        >>> root = Path(tempfile.mkdtemp()); (root / "chapters").mkdir()
        >>> out = {"output_type": "display_data", "data": {"text/plain": "claim x: 1 >= 0 ✓"},
        ...        "metadata": {CLAIM_METADATA_KEY: {"id": "x", "value": 1.0, "lower": 0.0, "upper": None,
        ...                                          "unit": "", "text": ""}}}
        >>> nb = {"cells": [{"cell_type": "markdown", "source": "# 1. Demo"},
        ...                 {"cell_type": "code", "source": "", "outputs": [out]}]}
        >>> _ = (root / "chapters" / "01_demo.ipynb").write_text(json.dumps(nb))
        >>> ch = read_chapter(root, Path("chapters/01_demo.ipynb"))
        >>> ch.title, [c["id"] for c in ch.claims], ch.seeds
        ('1. Demo', ['x'], None)
    """
    root, rel = Path(root), Path(rel)
    nb = json.loads((root / rel).read_text(encoding="utf-8"))
    title = rel.stem
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            m = re.search(r"^#\s+(.+)$", src, re.M)
            if m:
                title = m.group(1).strip()
                break
    ch = Chapter(rel, title)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = out.get("metadata") or {}
            if isinstance(meta.get(CLAIM_METADATA_KEY), dict):
                ch.claims.append(meta[CLAIM_METADATA_KEY])
            if isinstance(meta.get(TABLE_METADATA_KEY), dict):
                ch.tables.append(meta[TABLE_METADATA_KEY])
            html = (out.get("data") or {}).get("text/html")
            if html and TABLE_METADATA_KEY not in meta:
                html = "".join(html) if isinstance(html, list) else html
                if "nnbook-table" in html:
                    ch.displayed_tables.append(html)
    rec = root / "tests" / "seed_records" / f"{rel.stem}.json"
    if rec.is_file():
        try:
            ch.seeds = json.loads(rec.read_text(encoding="utf-8"))
        except ValueError:
            ch.seeds = None
    return ch


def read_book(root: Path) -> list[Chapter]:
    """Every chapter of the book at ``root`` (a checkout), read from its stored notebooks, in book order."""
    return [read_chapter(root, rel) for rel in toc_chapters(root)]


# --------------------------------------------------------------------------- the shipped ledger
def _seed_summary(ch: Chapter) -> dict | None:
    if not ch.seeds:
        return None
    claims = {}
    for c in ch.claims:
        cid = c.get("id")
        rec = ch.seed_record(cid)
        if rec is not None:
            claims[cid] = {k: rec[k] for k in _SEED_FIELDS if rec[k] is not None or k in ("min", "max")}
    return {"seeds": list(ch.seeds.get("seeds") or []), "claims": claims}


def dumps_book(chapters: list[Chapter]) -> str:
    """The text of ``nnbook/resources/ledger.json`` for ``chapters`` (deterministic: sorted keys, one format)."""
    data = {
        "about": "Generated by tools/build_appendices.py from the stored chapter notebooks and "
                 "tests/seed_records/; read it with nnbook.ledger.load_book(). Do not edit by hand.",
        "format": LEDGER_FORMAT,
        "chapters": [{"path": ch.path.as_posix(), "title": ch.title,
                      "claims": [{k: c.get(k) for k in _CLAIM_FIELDS} for c in ch.claims],
                      "tables": ch.tables, "seeds": _seed_summary(ch)} for ch in chapters],
    }
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load_book(path: str | os.PathLike | None = None) -> list[Chapter]:
    """The book's chapters as recorded in the shipped ledger (``nnbook/resources/ledger.json``).

    Works wherever ``nnbook`` is installed (a wheel, a ``git+`` URL on Colab): it needs neither the
    notebooks nor ``tests/seed_records/``. It is the state of the book when
    ``tools/build_appendices.py`` last ran (a test fails when that is stale); :func:`read_book` reads a
    checkout's notebooks directly.

    Args:
        path: another ledger file to read (default: the one shipped with the package).

    Raises:
        ValueError: the file is not a ledger of a format this version reads.

    Examples:
        >>> book = load_book()
        >>> all(isinstance(ch, Chapter) for ch in book) and sum(len(ch.claims) for ch in book) > 0
        True
    """
    if path is None:
        from importlib.resources import files

        text = files("nnbook").joinpath(LEDGER_RESOURCE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"load_book: expected a ledger of format {LEDGER_FORMAT}, got format {got!r}")
    return [Chapter(Path(c["path"]), c["title"], list(c.get("claims") or []), list(c.get("tables") or []),
                    c.get("seeds")) for c in data.get("chapters", [])]
