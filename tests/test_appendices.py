"""Appendix A and the claims ledger: generated from the stored notebooks, and never stale.

Also tests ``nnbook.plot.table(..., record=)``, which stores a results table machine-readably.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_appendices as B  # noqa: E402

from nnbook import plot  # noqa: E402


# --------------------------------------------------------------------------- record=
def _df():
    return pd.DataFrame({"method": ["dense", "pruned"], "test accuracy": [0.97, float("nan")],
                         "params": [50_610, 4_593], "latency (ms)": [0.031, 0.030]})


def test_table_record_is_json_ready():
    rec = plot.table_record(_df(), "pruning", caption="demo")
    assert rec == {"family": "pruning", "caption": "demo",
                   "columns": ["method", "test accuracy", "params", "latency (ms)"],
                   "rows": [["dense", 0.97, 50610, 0.031], ["pruned", None, 4593, 0.03]]}
    json.dumps(rec, allow_nan=False)  # NaN became None, numpy numbers became Python numbers


def test_table_without_ipython_returns_styler():
    styler = plot.table(_df(), record="pruning")
    assert type(styler).__name__ == "Styler"
    assert "nnbook-table" in styler.to_html()
    assert type(plot.table(_df())).__name__ == "Styler"  # the old behaviour, unchanged


def test_table_record_displays_html_with_metadata(monkeypatch):
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, metadata=None: shown.append((obj, raw, metadata)))
    out = plot.table(_df(), formats={"test accuracy": "{:.1%}"}, caption="c", record="pruning")
    assert out is None and len(shown) == 1
    bundle, raw, meta = shown[0]
    assert raw and 'class="nnbook-table"' in bundle["text/html"] and "97.0%" in bundle["text/html"]
    assert bundle["text/plain"] == "table pruning: 2 rows x 4 columns"
    assert meta[plot.TABLE_METADATA_KEY]["rows"][0] == ["dense", 0.97, 50610, 0.031]
    # without record= nothing is displayed by the helper itself
    assert type(plot.table(_df())).__name__ == "Styler" and len(shown) == 1


@pytest.mark.parametrize("bad, exc", [("", ValueError), ("  ", ValueError), (3, TypeError)])
def test_table_record_rejects_bad_family(bad, exc):
    with pytest.raises(exc, match=r"^table: record"):
        plot.table(_df(), record=bad)


# --------------------------------------------------------------------------- the tool's parts
def test_map_columns_units():
    m = B.map_columns(["model", "test acc (%)", "params (k)", "FLOPs", "size (KiB)", "latency (µs)"])
    assert m["accuracy"] == (1, 0.01) and m["parameters"] == (2, 1e3) and m["FLOPs"] == (3, 1.0)
    assert m["bytes"] == (4, 1024.0) and m["latency"] == (5, 1e-3) and m["label"] == (0, 1.0)
    m = B.map_columns(["method", "val accuracy", "test accuracy", "accuracy sd", "bytes"])
    assert m["accuracy"][0] == 2 and "latency" not in m and m["bytes"] == (4, 1.0)


def test_displayed_table_is_parsed_back():
    html = plot.table(_df(), formats={"test accuracy": "{:.1%}"}).to_html()
    p = B._TableParser()
    p.feed(html)
    (t,) = p.tables
    assert t["columns"] == ["method", "test accuracy", "params", "latency (ms)"]
    assert t["rows"][0][:3] == ["dense", 0.97, 50610] and t["rows"][1][1] is None


def test_number_format_is_fixed():
    assert [B.fnum(x) for x in (None, 3, 1234567.0, 0.123456, float("nan"), 12345.6)] == \
        ["—", "3", "1,234,567", "0.1235", "—", "12,346"]


# --------------------------------------------------------------------------- staleness
def _mini_book(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the book with one real chapter that records claims, and its seed record."""
    book = next(ch for ch in B.read_book(ROOT) if ch.claims)
    (tmp_path / "chapters").mkdir()
    (tmp_path / "tests" / "seed_records").mkdir(parents=True)
    nb = tmp_path / book.path
    shutil.copy(ROOT / book.path, nb)
    rec = ROOT / "tests" / "seed_records" / f"{book.stem}.json"
    if rec.is_file():
        shutil.copy(rec, tmp_path / "tests" / "seed_records" / rec.name)
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nchapters:\n  - file: {book.doc}\n")
    return tmp_path, nb


def _change_first_claim(nb: Path) -> None:
    data = json.loads(nb.read_text(encoding="utf-8"))
    for cell in data["cells"]:
        for out in cell.get("outputs", []):
            c = (out.get("metadata") or {}).get(B.CLAIM_KEY)
            if c:
                c["value"] = c["value"] + 1.2345
                nb.write_text(json.dumps(data), encoding="utf-8")
                return
    raise AssertionError("no claim found")


def test_check_fails_when_a_stored_claim_changes(tmp_path, capsys):
    root, nb = _mini_book(tmp_path)
    assert B.main(["--check", "--root", str(root)]) == 1  # nothing generated yet
    assert B.main(["--root", str(root)]) == 0
    assert B.main(["--check", "--root", str(root)]) == 0
    before = (root / B.LEDGER).read_text(encoding="utf-8")
    _change_first_claim(nb)
    assert B.main(["--check", "--root", str(root)]) == 1
    assert "stale: book/claims_ledger.md" in capsys.readouterr().out
    assert (root / B.LEDGER).read_text(encoding="utf-8") == before  # --check writes nothing
    assert B.main(["--root", str(root)]) == 0 and B.main(["--check", "--root", str(root)]) == 0


def test_a_chapter_without_claims_or_tables_is_fine(tmp_path):
    (tmp_path / "chapters").mkdir()
    empty = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 12. Empty"}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "chapters" / "12_empty.ipynb").write_text(json.dumps(empty))
    assert B.main(["--root", str(tmp_path)]) == 0
    ledger = (tmp_path / B.LEDGER).read_text(encoding="utf-8")
    assert "**0 claims**" in ledger and "## 12. Empty" in ledger
    assert "No chapter has recorded a results table yet." in (tmp_path / B.APPENDIX_A).read_text(encoding="utf-8")


def test_the_book_appendices_are_up_to_date():
    """Fails when a notebook's stored results changed without `python tools/build_appendices.py`."""
    assert B.main(["--check"]) == 0, "run: python tools/build_appendices.py"


def test_ledger_lists_every_claim_of_every_chapter():
    stored = 0
    for nb in (ROOT / "chapters").glob("*.ipynb"):
        data = json.loads(nb.read_text(encoding="utf-8"))
        stored += sum(1 for c in data["cells"] for o in c.get("outputs", [])
                      if B.CLAIM_KEY in (o.get("metadata") or {}))
    text = (ROOT / B.LEDGER).read_text(encoding="utf-8")
    rows = re.findall(r"^\| `[^`]+` \|", text, re.M)
    assert len(rows) == stored, (len(rows), stored)
    assert f"**{stored} claims**" in text
