"""Appendix A, the claims ledger and the shipped ledger: generated from the stored notebooks, never stale.

The writers and the reader they use are tested in ``tests/test_ledger.py``.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from nnbook import ledger, plot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_appendices as B  # noqa: E402


# --------------------------------------------------------------------------- the tool's parts
def test_map_columns_units():
    m = B.map_columns(["model", "test acc (%)", "params (k)", "FLOPs", "size (KiB)", "latency (µs)"])
    assert m["accuracy"] == (1, 0.01) and m["parameters"] == (2, 1e3) and m["FLOPs"] == (3, 1.0)
    assert m["bytes"] == (4, 1024.0) and m["latency"] == (5, 1e-3) and m["label"] == (0, 1.0)
    m = B.map_columns(["method", "val accuracy", "test accuracy", "accuracy sd", "bytes"])
    assert m["accuracy"][0] == 2 and "latency" not in m and m["bytes"] == (4, 1.0)


def _df():
    return pd.DataFrame({"method": ["dense", "pruned"], "test accuracy": [0.97, float("nan")],
                         "params": [50_610, 4_593], "latency (ms)": [0.031, 0.030]})


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
    book = next(ch for ch in ledger.read_book(ROOT) if ch.claims)
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
            c = (out.get("metadata") or {}).get(ledger.CLAIM_METADATA_KEY)
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
    out = capsys.readouterr().out
    assert "stale: book/claims_ledger.md" in out and "stale: nnbook/resources/ledger.json" in out
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
                      if ledger.CLAIM_METADATA_KEY in (o.get("metadata") or {}))
    text = (ROOT / B.LEDGER).read_text(encoding="utf-8")
    rows = re.findall(r"^\| `[^`]+` \|", text, re.M)
    assert len(rows) == stored, (len(rows), stored)
    assert f"**{stored} claims**" in text


# --------------------------------------------------------------------------- the shipped ledger
def test_shipped_ledger_is_what_the_reader_gets_from_the_notebooks(tmp_path):
    """``nnbook/resources/ledger.json`` (what chapter 11 reads) round-trips to the stored notebooks' records."""
    shipped = ledger.load_book()
    stored = ledger.read_book(ROOT)
    assert [ch.path for ch in shipped] == [ch.path for ch in stored]
    for s, r in zip(shipped, stored):
        assert (s.title, s.stem, s.doc, s.tables, s.seeds_tried) == (r.title, r.stem, r.doc, r.tables, r.seeds_tried)
        assert s.claims == [{k: c.get(k) for k in ("id", "value", "lower", "upper", "unit", "text")} for c in r.claims]
        for c in r.claims:
            assert s.seed_record(c["id"]) == r.seed_record(c["id"]), (r.stem, c["id"])
    assert (ROOT / B.LEDGER_JSON).read_text(encoding="utf-8") == ledger.dumps_book(stored), \
        "run: python tools/build_appendices.py"


def test_a_chapter_without_claims_or_tables_ships_too(tmp_path):
    (tmp_path / "chapters").mkdir()
    empty = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 12. Empty"}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "chapters" / "12_empty.ipynb").write_text(json.dumps(empty))
    assert B.main(["--root", str(tmp_path)]) == 0
    (ch,) = ledger.load_book(tmp_path / B.LEDGER_JSON)
    assert (ch.title, ch.claims, ch.tables, ch.seeds, ch.seeds_tried) == ("12. Empty", [], [], None, None)
    assert not list((tmp_path / B.LEDGER_JSON).parent.glob("*.tmp"))  # written atomically, nothing left over


def _code_cells(nb_path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"]


def test_chapter_11_runs_from_the_installed_package():
    """Chapter 11 reads the shipped ledger: no sys.path, no path relative to the repository (Colab opens one notebook)."""
    cells = _code_cells(ROOT / "chapters" / "11_reflection.ipynb")
    code = "\n".join(cells[1:])  # the setup cell is stamped (tools/stamp_setup.py) and installs nnbook
    assert "sys.path" not in code
    assert not re.search(r"""["'][^"'\n]*\.\.[/\\]|["']\.\.["']|Path\(\s*["']\.\.""", code), \
        "chapter 11 reaches outside its folder"
    for bad in ("build_appendices", "seed_records", "_toc.yml", ".ipynb"):
        assert bad not in code, bad
    assert "ledger.load_book()" in code
