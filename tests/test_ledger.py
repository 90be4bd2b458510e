"""nnbook.ledger: the claim and table writers, the notebook reader, and the shipped ledger."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import nnbook
from nnbook import ledger, plot

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- the package's face
def test_claim_is_a_function_and_ledger_its_module():
    assert callable(nnbook.claim) and nnbook.claim is ledger.claim
    assert "ledger" in nnbook.__all__ and "claim" in nnbook.__all__
    assert importlib.util.find_spec("nnbook.claim") is None  # no module left for the function to shadow


def test_metadata_keys_are_defined_once():
    """Everything that writes or reads the records imports the keys from nnbook.ledger (prose may name them)."""
    import ast

    for key in (ledger.CLAIM_METADATA_KEY, ledger.TABLE_METADATA_KEY):
        typed = [p.relative_to(ROOT).as_posix() for p in sorted([*ROOT.glob("nnbook/**/*.py"), *ROOT.glob("tools/*.py")])
                 if any(isinstance(n, ast.Constant) and n.value == key
                        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
        assert typed == ["nnbook/ledger.py"], (key, typed)


# --------------------------------------------------------------------------- claim
def test_claim_asserts_displays_and_logs(tmp_path, monkeypatch, capsys):
    from nnbook import claim
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("NNBOOK_CLAIM_LOG", str(log))
    monkeypatch.setenv("NNBOOK_NOTEBOOK", "chapters/99_demo.ipynb")
    monkeypatch.delenv("NNBOOK_CLAIM_CONTINUE", raising=False)
    assert claim("acc", 0.95, lower=0.9, text="above 90 %") is None
    assert "claim acc: 0.95 >= 0.9 ✓ — above 90 %" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=r"claim gap: 12 points <= 10 ✗ FAILED — small gap"):
        claim("gap", 12, upper=10, unit="points", text="small gap")
    with pytest.raises(AssertionError):
        claim("nan", float("nan"), lower=0)
    with pytest.raises(ValueError, match="give lower="):
        claim("nobound", 1.0)
    with pytest.raises(ValueError, match="id must be"):
        claim("Bad Id", 1.0, lower=0)
    with pytest.raises(ValueError, match="above upper"):
        claim("inv", 1.0, lower=2, upper=1)
    with pytest.raises(TypeError, match="real number"):
        claim("str", "0.9", lower=0)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["id"] for r in records] == ["acc", "gap", "nan"]
    assert [r["ok"] for r in records] == [True, False, False]
    assert records[0]["notebook"] == "chapters/99_demo.ipynb"


def test_claim_continue_only_inside_a_sweep(tmp_path, monkeypatch, capsys):
    """NNBOOK_CLAIM_CONTINUE=1 with a log: a failing claim is logged as failed and returns; without a log it raises."""
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("NNBOOK_CLAIM_CONTINUE", "1")
    monkeypatch.delenv("NNBOOK_CLAIM_LOG", raising=False)
    with pytest.raises(AssertionError, match="✗ FAILED"):
        ledger.claim("alone", 2.0, upper=1.0)
    monkeypatch.setenv("NNBOOK_CLAIM_LOG", str(log))
    assert ledger.claim("swept", 2.0, upper=1.0, text="t") is None
    assert "claim swept: 2 <= 1 ✗ FAILED — t" in capsys.readouterr().out
    (rec,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert rec["id"] == "swept" and rec["ok"] is False and rec["value"] == 2.0
    monkeypatch.setenv("NNBOOK_CLAIM_CONTINUE", "0")
    with pytest.raises(AssertionError):
        ledger.claim("strict", 2.0, upper=1.0)


def test_claim_log_needs_no_fcntl(tmp_path):
    """``import nnbook`` and a logged claim work where ``fcntl`` does not exist (Windows)."""
    log = tmp_path / "claims.jsonl"
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import nnbook\n"
            "nnbook.claim('portable', 1.0, lower=0, display=False)\n")
    env = dict(os.environ, NNBOOK_CLAIM_LOG=str(log))
    env.pop("NNBOOK_CLAIM_CONTINUE", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(log.read_text())["id"] == "portable"


def _fake_ipython(monkeypatch) -> list:
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, metadata=None: shown.append((obj, raw, metadata)))
    return shown


def test_claim_in_ipython_carries_its_record(monkeypatch, capsys):
    shown = _fake_ipython(monkeypatch)
    ledger.claim("acc", 0.95, lower=0.9, unit="", text="a < b & c")
    assert capsys.readouterr().out == ""
    ((bundle, raw, meta),) = shown
    assert raw and bundle["text/plain"] == "claim acc: 0.95 >= 0.9 ✓ — a < b & c"
    assert "a &lt; b &amp; c" in bundle["text/html"] and 'class="nnbook-claim"' in bundle["text/html"]
    assert meta == {ledger.CLAIM_METADATA_KEY: {"id": "acc", "value": 0.95, "lower": 0.9, "upper": None,
                                                "unit": "", "text": "a < b & c"}}


def test_display_record_refuses_other_keys():
    with pytest.raises(ValueError, match="^display_record: key"):
        ledger.display_record("x", "<b>x</b>", "nnbook_other", {})


# --------------------------------------------------------------------------- table records
def _df():
    return pd.DataFrame({"method": ["dense", "pruned"], "test accuracy": [0.97, float("nan")],
                         "params": [50_610, 4_593], "latency (ms)": [0.031, 0.030]})


def test_table_record_is_json_ready():
    rec = ledger.table_record(_df(), "pruning", caption="demo")
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
    shown = _fake_ipython(monkeypatch)
    out = plot.table(_df(), formats={"test accuracy": "{:.1%}"}, caption="c", record="pruning")
    assert out is None and len(shown) == 1
    bundle, raw, meta = shown[0]
    assert raw and 'class="nnbook-table"' in bundle["text/html"] and "97.0%" in bundle["text/html"]
    assert bundle["text/plain"] == "table pruning: 2 rows x 4 columns"
    assert meta[ledger.TABLE_METADATA_KEY]["rows"][0] == ["dense", 0.97, 50610, 0.031]
    # without record= nothing is displayed by the helper itself
    assert type(plot.table(_df())).__name__ == "Styler" and len(shown) == 1


@pytest.mark.parametrize("bad, exc", [("", ValueError), ("  ", ValueError), (3, TypeError)])
def test_table_record_rejects_bad_family(bad, exc):
    with pytest.raises(exc, match=r"^table: record"):
        plot.table(_df(), record=bad)


# --------------------------------------------------------------------------- reading a notebook
def _output(bundle: dict, meta: dict) -> dict:
    return {"output_type": "display_data", "data": bundle, "metadata": meta}


def _hand_made_book(tmp_path: Path, monkeypatch) -> tuple[Path, dict, dict]:
    """A book of one chapter whose outputs are what claim() and table(record=) really display."""
    shown = _fake_ipython(monkeypatch)
    ledger.claim("demo-acc", 0.93, lower=0.9, unit="", text="accuracy above 90 %")
    plot.table(_df(), caption="results", record="pruning")
    plain = plot.table(_df().iloc[:1]).to_html()  # displayed without record=
    outputs = [_output(b, m) for b, _, m in shown]
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["intro\n", "# 99. Demo chapter\n"]},
                    {"cell_type": "code", "metadata": {}, "source": "", "execution_count": 1, "outputs": outputs},
                    {"cell_type": "code", "metadata": {}, "source": "", "execution_count": 2,
                     "outputs": [{"output_type": "execute_result", "execution_count": 2, "metadata": {},
                                  "data": {"text/html": plain, "text/plain": "<Styler>"}}]},
                    {"cell_type": "markdown", "metadata": {}, "source": "# not the title"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "99_demo.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    return tmp_path, shown[0][2][ledger.CLAIM_METADATA_KEY], shown[1][2][ledger.TABLE_METADATA_KEY]


def test_read_a_hand_made_notebook(tmp_path, monkeypatch):
    root, claim_rec, table_rec = _hand_made_book(tmp_path, monkeypatch)
    (ch,) = ledger.read_book(root)
    assert (ch.path, ch.stem, ch.doc, ch.title) == (Path("chapters/99_demo.ipynb"), "99_demo", "chapters/99_demo",
                                                    "99. Demo chapter")
    assert ch.claims == [claim_rec] and ch.tables == [table_rec]
    assert table_rec["caption"] == "results" and table_rec["rows"][1] == ["pruned", None, 4593, 0.03]
    assert len(ch.displayed_tables) == 1 and "nnbook-table" in ch.displayed_tables[0]
    assert ch.seeds is None and ch.seeds_tried is None and ch.seed_record("demo-acc") is None


_OLD_RECORD = {"notebook": "chapters/99_demo.ipynb", "seeds": [0, 1, 2], "failed_seeds": {"2": "boom"},
               "claims": {"demo-acc": {"text": "", "unit": "", "lower": 0.9, "upper": None, "seeds_ok": [0, 1],
                                       "seeds_failed": [2], "n_seeds_ok": 2, "min": 0.91, "max": 0.95}}}
_NEW_RECORD = {"notebook": "chapters/99_demo.ipynb", "seeds": [17, 3141592653], "failed_seeds": {},
               "drawn": "fresh random seeds (tools/seed_sweep.py)", "swept": "2026-12-02", "torch": "2.9.0",
               "python": "3.12.3",
               "claims": {"demo-acc": {"text": "", "unit": "", "lower": 0.9, "upper": None,
                                       "values": [[17, 0.92], [3141592653, 0.94]], "seeds_ok": [17, 3141592653],
                                       "seeds_failed": [], "n_seeds_ok": 2, "min": 0.92, "max": 0.94,
                                       "mean": 0.93, "std": 0.0141}}}


@pytest.mark.parametrize("record, expected", [
    (_OLD_RECORD, {"n_seeds_ok": 2, "seeds_failed": [2], "min": 0.91, "max": 0.95, "mean": None, "std": None}),
    (_NEW_RECORD, {"n_seeds_ok": 2, "seeds_failed": [], "min": 0.92, "max": 0.94, "mean": 0.93, "std": 0.0141}),
], ids=["old-format", "new-format"])
def test_seed_records_of_both_formats(tmp_path, monkeypatch, record, expected):
    root, _, _ = _hand_made_book(tmp_path, monkeypatch)
    (root / "tests" / "seed_records").mkdir(parents=True)
    (root / "tests" / "seed_records" / "99_demo.json").write_text(json.dumps(record), encoding="utf-8")
    (ch,) = ledger.read_book(root)
    assert ch.seeds_tried == len(record["seeds"])
    assert ch.seed_record("demo-acc") == expected and ch.seed_record("never-made") is None
    # the shipped form keeps exactly these summary fields (mean/std only where the record has them)
    path = tmp_path / "ledger.json"
    path.write_text(ledger.dumps_book([ch]), encoding="utf-8")
    shipped = json.loads(path.read_text())["chapters"][0]["seeds"]
    assert shipped["seeds"] == record["seeds"]
    assert set(shipped["claims"]["demo-acc"]) == {k for k, v in expected.items() if v is not None or k in ("min", "max")}
    (back,) = ledger.load_book(path)
    assert back.seeds_tried == ch.seeds_tried and back.seed_record("demo-acc") == expected


def test_seed_record_without_n_seeds_ok_counts_seeds_ok(tmp_path, monkeypatch):
    root, _, _ = _hand_made_book(tmp_path, monkeypatch)
    (root / "tests" / "seed_records").mkdir(parents=True)
    rec = {"seeds": [0, 1, 2], "claims": {"demo-acc": {"seeds_ok": [0, 2], "min": 0.9, "max": 0.95}}}
    (root / "tests" / "seed_records" / "99_demo.json").write_text(json.dumps(rec))
    (ch,) = ledger.read_book(root)
    assert ch.seed_record("demo-acc")["n_seeds_ok"] == 2 and ch.seed_record("demo-acc")["seeds_failed"] == []


def test_unreadable_seed_record_counts_as_none(tmp_path, monkeypatch):
    root, _, _ = _hand_made_book(tmp_path, monkeypatch)
    (root / "tests" / "seed_records").mkdir(parents=True)
    (root / "tests" / "seed_records" / "99_demo.json").write_text('{"seeds": [0, 1')  # half written
    (ch,) = ledger.read_book(root)
    assert ch.seeds is None and ch.seeds_tried is None


def test_toc_order_then_the_rest_by_name(tmp_path):
    (tmp_path / "chapters").mkdir()
    for stem in ("01_a", "02_b", "03_c", "04_d"):
        (tmp_path / "chapters" / f"{stem}.ipynb").write_text('{"cells": []}')
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                       "  - file: chapters/03_c\n  - file: 'chapters/01_a.ipynb'\n"
                                       "  - file: chapters/99_missing\n  - file: book/glossary\n")
    assert ledger.toc_chapters(tmp_path) == [Path("chapters/03_c.ipynb"), Path("chapters/01_a.ipynb"),
                                             Path("chapters/02_b.ipynb"), Path("chapters/04_d.ipynb")]
    assert ledger.toc_chapters(tmp_path / "nowhere") == []
    (ch,) = [c for c in ledger.read_book(tmp_path) if c.stem == "02_b"]
    assert ch.title == "02_b" and ch.claims == [] and ch.tables == []  # no heading: the stem


# --------------------------------------------------------------------------- the shipped ledger
def test_dump_and_load_round_trip(tmp_path, monkeypatch):
    root, claim_rec, table_rec = _hand_made_book(tmp_path, monkeypatch)
    chapters = ledger.read_book(root)
    text = ledger.dumps_book(chapters)
    assert text == ledger.dumps_book(ledger.read_book(root))  # deterministic
    path = tmp_path / "ledger.json"
    path.write_text(text, encoding="utf-8")
    (ch,) = ledger.load_book(path)
    assert (ch.path, ch.title, ch.claims, ch.tables, ch.seeds) == (Path("chapters/99_demo.ipynb"), "99. Demo chapter",
                                                                   [claim_rec], [table_rec], None)
    assert ch.displayed_tables == []  # appendix A's HTML fallback is not shipped
    assert ledger.dumps_book([ch]) == text


def test_load_book_refuses_another_format(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"format": 99, "chapters": []}))
    with pytest.raises(ValueError, match="^load_book: expected a ledger of format 1, got format 99"):
        ledger.load_book(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="^load_book"):
        ledger.load_book(path)


def test_load_book_reads_the_shipped_file():
    """The resource in the package: every chapter of the book, every claim with the fields chapter 11 uses."""
    book = ledger.load_book()
    assert [ch.path for ch in book] == ledger.toc_chapters(ROOT)
    assert sum(len(ch.claims) for ch in book) >= 50
    for ch in book:
        assert ch.title and ch.stem
        for c in ch.claims:
            assert set(c) == {"id", "value", "lower", "upper", "unit", "text"}
            rec = ch.seed_record(c["id"])
            if rec is not None:
                assert ch.seeds_tried >= rec["n_seeds_ok"] >= 0
    text = (ROOT / "nnbook" / ledger.LEDGER_RESOURCE).read_text(encoding="utf-8")
    assert json.loads(text)["format"] == ledger.LEDGER_FORMAT


def test_the_ledger_is_package_data():
    """pyproject.toml ships resources/*.json, so a wheel or a git+ install has the ledger."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    assert "resources/*.json" in data["nnbook"] and ledger.LEDGER_RESOURCE.startswith("resources/")
