#!/usr/bin/env python3
"""Turn nbval comment markers into cell tags, and collapse long plotting cells in the book.

Usage:  python tools/retag.py [--check] [NOTEBOOK ...]     (default: chapters/*.ipynb)

What it changes, cell by cell (code cells only):

* a line that is only an nbval marker comment is removed and becomes the cell tag nbval reads
  instead (so the rendered book shows no scaffolding):

  ===============================  ======================
  ``# NBVAL_IGNORE_OUTPUT``        ``nbval-ignore-output``
  ``# NBVAL_RAISES_EXCEPTION``     ``raises-exception``
  ``# NBVAL_SKIP``                 ``nbval-skip``
  ``# NBVAL_CHECK_OUTPUT``         ``nbval-check-output``
  ===============================  ======================

* a long plotting cell (at least ``MIN_LINES`` lines of code, of which at least ``PLOT_SHARE``
  draw: ``plt.``/``fig.``/``ax.`` calls and the like) gets the tag ``hide-input``: the book shows
  its figure with the code collapsed under "Show code cell source". Cells that state a checked
  number (``assert``, ``nnbook.claim``) and the setup cell are left alone.

Running it again changes nothing (idempotent). With ``--check`` nothing is written and the exit
status is 1 when a notebook would change. A notebook whose cells changed must be re-executed
(``python tools/execute.py NOTEBOOK``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MARKERS = {
    "NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "NBVAL_RAISES_EXCEPTION": "raises-exception",
    "NBVAL_SKIP": "nbval-skip",
    "NBVAL_CHECK_OUTPUT": "nbval-check-output",
}
MARKER_LINE = re.compile(r"^\s*#\s*(NBVAL_[A-Z_]+)\s*$")
MIN_LINES = 8
PLOT_SHARE = 0.6
PLOT_LINE = re.compile(
    r"\b(plt|fig|figure|ax|axes|axs|ax\d|cax|cbar)\b\s*[.\[,)=]"   # calls on pyplot, figures, axes
    r"|\.(plot|scatter|bar|barh|hist|imshow|matshow|contour|contourf|semilogy|semilogx|loglog|errorbar|"
    r"fill_between|axhline|axvline|text|annotate|legend|set|set_\w+|suptitle|tight_layout|colorbar|grid)\("
    r"|nnbook\.plot\.(learning_curves|cost_accuracy)"
)
CHECK_LINE = re.compile(r"^\s*assert\b|\bclaim\(")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_lines(src: str) -> list[str]:
    return [ln for ln in src.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def is_long_plotting_cell(src: str) -> bool:
    """True for a cell of at least ``MIN_LINES`` code lines, mostly drawing, that checks no number.

    >>> is_long_plotting_cell("fig, ax = plt.subplots()\\n" + "ax.plot([1], [2])\\n" * 7 + "plt.show()")
    True
    >>> is_long_plotting_cell("fig, ax = plt.subplots()\\nax.plot([1], [2])\\nplt.show()")
    False
    >>> is_long_plotting_cell("x = 1\\n" * 8 + "plt.plot([x])")
    False
    """
    lines = _code_lines(src)
    if len(lines) < MIN_LINES or any(CHECK_LINE.search(ln) for ln in lines):
        return False
    drawing = sum(bool(PLOT_LINE.search(ln)) for ln in lines)
    return drawing >= PLOT_SHARE * len(lines)


def retag_cell(cell) -> bool:
    """Retag one cell in place; True when it changed."""
    if cell.get("cell_type") != "code":
        return False
    meta = cell.setdefault("metadata", {})
    tags = list(meta.get("tags", []))
    src = _source(cell)
    kept, changed = [], False
    for line in src.splitlines(keepends=True):
        m = MARKER_LINE.match(line)
        if m and m.group(1) in MARKERS:
            tag = MARKERS[m.group(1)]
            if tag not in tags:
                tags.append(tag)
            changed = True
            continue
        kept.append(line)
    if changed:
        src = "".join(kept).lstrip("\n")
        cell["source"] = src
    if ("nnbook-setup" not in tags and "hide-input" not in tags and "remove-input" not in tags
            and is_long_plotting_cell(src)):
        tags.append("hide-input")
        changed = True
    if tags != list(meta.get("tags", [])):
        meta["tags"] = tags
        changed = True
    return changed


def retag(path: Path, check: bool = False) -> int:
    """Retag a notebook file; return how many cells changed (written unless ``check``)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    n = sum(retag_cell(c) for c in nb.get("cells", []))
    if n and not check:
        import nbformat

        nbformat.write(nbformat.from_dict(nb), str(path))
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a notebook would change")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    stale = 0
    for p in paths:
        n = retag(p, args.check)
        if n:
            stale += 1
            verb = "would retag" if args.check else "retagged"
            print(f"{p}: {verb} {n} cell{'s' if n != 1 else ''}" + ("" if args.check else " (re-execute it)"))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
