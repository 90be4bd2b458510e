#!/usr/bin/env python3
"""Render the claims ledger, appendix A and the shipped ledger from the stored chapter notebooks.

Usage::

    python tools/build_appendices.py            # (re)write book/appendix_a.md, book/claims_ledger.md,
                                                #   book/_generated/appendix_a_cost_accuracy.png
                                                #   and nnbook/resources/ledger.json
    python tools/build_appendices.py --check    # exit 1 when any of them (but the PNG) is stale
    python tools/build_appendices.py --root DIR # work on another checkout (the tests use a copy)

Nothing is typed by hand: the pages are built from what the executed notebooks stored, read by
:func:`nnbook.ledger.read_book` (the reader, the metadata keys and the writers live in
:mod:`nnbook.ledger`; this tool only renders).

* **Claims.** :func:`nnbook.claim` stores every checked statement in the metadata of its
  output (key ``"nnbook_claim"``: id, value, lower, upper, unit, text). The ledger lists them
  chapter by chapter, in cell order, joined with ``tests/seed_records/<stem>.json``
  (written by ``tools/seed_sweep.py``): on how many seeds each claim held, out of how many
  tried, and the range of values over those seeds.
* **Results tables.** ``nnbook.plot.table(df, record="family")`` stores the table's values in
  its output metadata (key ``"nnbook_table"``). Appendix A groups the recorded tables by
  family and maps their columns onto accuracy, parameters, FLOPs, bytes and latency (see
  :func:`map_columns`; "—" where a chapter did not measure one). A chapter that recorded no
  table contributes the book tables it displayed (HTML with ``class="nnbook-table"``) that
  have an accuracy column and at least one cost column, parsed back from the page.
* **The shipped ledger.** ``nnbook/resources/ledger.json`` holds the same claims, recorded tables and
  seed summaries (:func:`nnbook.ledger.dumps_book`), so that :func:`nnbook.ledger.load_book` (chapter 11)
  works where nnbook is installed without this repository. It is written atomically.

The output is deterministic (chapters in ``_toc.yml`` order, then any other chapter
notebook by name; claims in cell order; fixed float formats), so ``--check`` compares the
Markdown and the JSON byte for byte. The PNG is not compared (its bytes depend on the matplotlib
build); instead the appendix states a digest of the plotted numbers, so a change of the
data makes the Markdown differ too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from nnbook.ledger import LEDGER_RESOURCE, Chapter, dumps_book, read_book

ROOT = Path(__file__).resolve().parent.parent
LEDGER = Path("book/claims_ledger.md")
LEDGER_JSON = Path("nnbook") / LEDGER_RESOURCE
APPENDIX_A = Path("book/appendix_a.md")
FIGURE = Path("book/_generated/appendix_a_cost_accuracy.png")
MISSING = "—"
QUANTITIES = ("accuracy", "parameters", "FLOPs", "bytes", "latency")


# --------------------------------------------------------------------------- reading back displayed tables
# Appendix A's fallback for chapters that display book tables without ``record=`` (``Chapter.displayed_tables``).
class _TableParser(HTMLParser):
    """Collect the header and body cells of every ``<table class="nnbook-table">``."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self._cur = None
        self._cell = None
        self._section = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "nnbook-table" in (a.get("class") or ""):
            self._cur = {"columns": [], "rows": [], "caption": None}
        elif self._cur is None:
            return
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._section == "tbody":
            self._cur["rows"].append([])
        elif tag in ("th", "td", "caption"):
            self._cell = [tag, ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if self._cur is None:
            return
        if tag in ("th", "td", "caption") and self._cell is not None:
            kind, text = self._cell[0], " ".join(self._cell[1].split())
            self._cell = None
            if kind == "caption":
                self._cur["caption"] = text
            elif self._section == "thead":
                self._cur["columns"].append(text)
            elif self._section == "tbody" and self._cur["rows"]:
                self._cur["rows"][-1].append(_parse_cell(text))
        elif tag == "table":
            self.tables.append(self._cur)
            self._cur, self._section = None, None


def _parse_cell(text: str):
    """A displayed cell back to a number where it is one ("1,234" -> 1234, "97.1%" -> 0.971)."""
    t = text.strip()
    if t in ("", MISSING, "nan", "None"):
        return None
    s = t.replace(",", "").replace("\u2212", "-")
    try:
        if s.endswith("%"):
            return float(s[:-1]) / 100
        v = float(s)
        return int(v) if re.fullmatch(r"-?\d+", s) else v
    except ValueError:
        return t


def html_tables(ch: Chapter) -> list[dict]:
    """The tables a chapter displayed without ``record=``, parsed back from their HTML."""
    out: list[dict] = []
    for html in ch.displayed_tables:
        p = _TableParser()
        p.feed(html)
        out += p.tables
    return out


# --------------------------------------------------------------------------- formatting
def fnum(x, digits: int = 4) -> str:
    """Fixed formatting of a number: integers with thousands separators, others to ``digits`` significant digits."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def md(text) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def bound_text(c: dict) -> str:
    lo, hi, u = c.get("lower"), c.get("upper"), c.get("unit") or ""
    u = f" {u}" if u else ""
    if lo is not None and hi is not None:
        return f"{fnum(lo)} ≤ x ≤ {fnum(hi)}{u}"
    if lo is not None:
        return f"≥ {fnum(lo)}{u}"
    if hi is not None:
        return f"≤ {fnum(hi)}{u}"
    return MISSING


def seed_info(ch: Chapter, cid: str) -> tuple[str, str, int | None, int | None]:
    """(``"ok / tried"``, ``"min – max"``, n_ok, n_tried) for one claim; "—" when never swept."""
    tried = ch.seeds_tried
    if tried is None:
        return MISSING, MISSING, None, None
    c = ch.seed_record(cid)
    if c is None:
        return f"0 / {tried}", MISSING, 0, tried
    n_ok = c["n_seeds_ok"]
    lo, hi = c["min"], c["max"]
    rng = MISSING if lo is None else f"{fnum(lo)} – {fnum(hi)}"
    return f"{n_ok} / {tried}", rng, n_ok, tried


# --------------------------------------------------------------------------- the ledger
def build_ledger(chapters: list[Chapter]) -> str:
    n = sum(len(ch.claims) for ch in chapters)
    all_seeds = sum(1 for ch in chapters for c in ch.claims
                    if (lambda s: s[2] is not None and s[2] == s[3] and s[3] > 0)(seed_info(ch, c.get("id", ""))))
    swept = sum(1 for ch in chapters for c in ch.claims if seed_info(ch, c.get("id", ""))[3])
    lines = [
        "<!-- GENERATED by tools/build_appendices.py from the stored notebooks: do not edit by hand. -->",
        "(claims-ledger)=",
        "# Claims ledger",
        "",
        "Every number the chapters' prose states is checked by `nnbook.claim` right after it is computed, and",
        "the check is recorded in the executed notebook. This page lists all of them: the statement, the value",
        "in the stored run, the bound the code asserts, and how many seeds it held on when the chapter was run",
        "again with other seeds by `tools/seed_sweep.py` (with the smallest and largest value seen). A bound",
        "such as `≥ 0` on a difference is an ordering claim (\"A beats B\"). Plain `assert` statements for exact",
        "facts (shapes, parameter counts, closed forms) are not listed.",
        "",
        f"**{n} claims** in {sum(1 for ch in chapters if ch.claims)} chapters; {swept} of them were run with "
        f"several seeds and {all_seeds} held on every seed tried.",
        "",
    ]
    for ch in chapters:
        lines += [f"## {md(ch.title)}", ""]
        if not ch.claims:
            lines += ["This chapter records no claims yet.", ""]
            continue
        lines += [f"Source: {{doc}}`/{ch.doc}`. " + ("Seeds: not swept yet." if ch.seeds_tried is None else
                  f"Seeds tried: {ch.seeds_tried}."), ""]
        lines += ["| id | statement | stored value | bound | seeds held / tried | range over seeds |",
                  "| --- | --- | ---: | --- | ---: | ---: |"]
        for c in ch.claims:
            cid = str(c.get("id", "?"))
            ok, rng, _, _ = seed_info(ch, cid)
            unit = f" {md(c['unit'])}" if c.get("unit") else ""
            lines.append(f"| `{md(cid)}` | {md(c.get('text') or MISSING)} | {fnum(c.get('value'))}{unit} | "
                         f"{md(bound_text(c))} | {ok} | {rng} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- appendix A
_UNIT_SCALE_BYTES = [("kib", 1024.0), ("mib", 1024.0 ** 2), ("kb", 1e3), ("mb", 1e6), ("bytes", 1.0), ("(b)", 1.0)]
_EXCLUDE_ACC = ("sd", "std", "±", "drop", "gap", "change", "delta", "δ", "loss", "diff", "spread", "train")


def map_columns(columns: list[str]) -> dict:
    """Which column gives each quantity, and the factor that converts it.

    Returns ``{quantity: (column index, factor)}`` for the quantities found among
    ``accuracy`` (to a fraction), ``parameters``, ``FLOPs``, ``bytes`` (to bytes) and
    ``latency`` (to ms), plus ``"label"``: the index of the first non-numeric-looking column.

    Examples:
        >>> m = map_columns(["method", "test accuracy", "non-zero params", "size (KB)", "latency (ms)"])
        >>> m["accuracy"], m["parameters"], m["bytes"], m["latency"]
        ((1, 1.0), (2, 1.0), (3, 1000.0), (4, 1.0))
    """
    low = [c.lower() for c in columns]
    found: dict = {}

    def first(pred):
        return next((i for i, c in enumerate(low) if pred(c)), None)

    acc = first(lambda c: ("accuracy" in c or re.search(r"\bacc\b", c)) and "test" in c
                and not any(x in c for x in _EXCLUDE_ACC))
    if acc is None:
        acc = first(lambda c: ("accuracy" in c or re.search(r"\bacc\b", c)) and not any(x in c for x in _EXCLUDE_ACC))
    if acc is not None:
        found["accuracy"] = (acc, 0.01 if ("%" in low[acc] or "points" in low[acc]) else 1.0)
    par = first(lambda c: "param" in c and "%" not in c)
    if par is not None:
        found["parameters"] = (par, 1e3 if "(k" in low[par] else (1e6 if "(m" in low[par] else 1.0))
    fl = first(lambda c: "flop" in c)
    if fl is not None:
        c = low[fl]
        found["FLOPs"] = (fl, 1e9 if "gflop" in c else (1e6 if "mflop" in c else (1e3 if "kflop" in c else 1.0)))
    by = first(lambda c: ("byte" in c or "size" in c or re.search(r"\((k|m)i?b\)", c)) and "batch" not in c
               and "ratio" not in c and "x" != c.strip())
    if by is not None:
        c = low[by]
        found["bytes"] = (by, next((f for k, f in _UNIT_SCALE_BYTES if k in c), 1.0))
    lat = first(lambda c: "latency" in c)
    if lat is None:
        lat = first(lambda c: ("(ms" in c or "(µs" in c or "(us" in c) and "train" not in c and "epoch" not in c)
    if lat is not None:
        c = low[lat]
        found["latency"] = (lat, 1e-3 if ("µs" in c or "(us" in c) else (1e3 if "(s" in c else 1.0))
    used = {i for i, _ in found.values()}
    label = next((i for i in range(len(columns)) if i not in used), 0)
    found["label"] = (label, 1.0)
    return found


def _as_float(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return None if (isinstance(v, float) and math.isnan(v)) else float(v)
    return None


@dataclass
class Family:
    name: str
    chapter: Chapter
    caption: str | None
    columns: list
    rows: list  # list of dicts: label + quantities (floats or None)
    mapping: dict
    parsed: bool  # True when read back from displayed HTML


def families(chapters: list[Chapter]) -> list[Family]:
    out: list[Family] = []
    for ch in chapters:
        if ch.tables:
            sources = [(t, False) for t in ch.tables]
        else:
            sources = [(t, True) for t in html_tables(ch)]
        for t, parsed in sources:
            cols = [str(c) for c in t.get("columns") or []]
            m = map_columns(cols)
            costs = [q for q in QUANTITIES[1:] if q in m]
            if parsed and ("accuracy" not in m or not costs):
                continue  # a displayed table that is not a cost/accuracy comparison
            rows = []
            for r in t.get("rows") or []:
                if len(r) != len(cols):
                    continue
                row = {"label": str(r[m["label"][0]]) if r[m["label"][0]] is not None else MISSING}
                for q in QUANTITIES:
                    if q in m:
                        v = _as_float(r[m[q][0]])
                        if v is not None:
                            v *= m[q][1]
                            if q == "accuracy" and v > 1.0:
                                v /= 100.0  # a percentage in a column that does not say so
                        row[q] = v
                    else:
                        row[q] = None
                rows.append(row)
            name = t.get("family") or re.sub(r"^\d+[a-z]?_", "", ch.stem)
            out.append(Family(str(name), ch, t.get("caption"), cols, rows, m, parsed))
    return out


def _acc_text(v):
    return MISSING if v is None else f"{100 * v:.1f}"


def _figure_points(fams: list[Family]) -> list[tuple]:
    pts = []
    for f in fams:
        for r in f.rows:
            if r["accuracy"] is None:
                continue
            pts.append((f.name, f.chapter.stem, r["label"], r["accuracy"], r["parameters"], r["latency"]))
    return pts


def figure_digest(points: list[tuple]) -> str:
    text = json.dumps([[p[0], p[1], p[2]] + [None if x is None else round(x, 9) for x in p[3:]] for p in points])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def draw_figure(points: list[tuple], path: Path) -> bool:
    """Accuracy against parameters and against latency, one colour per family; False when nothing to draw."""
    usable = [p for p in points if p[4] is not None or p[5] is not None]
    if not usable:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnbook.plot import use_style

    use_style()
    names = sorted({p[0] for p in usable})
    markers = "osD^vP*Xh<>"
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2), sharey=True)
    for k, (ax, idx, xl) in enumerate(zip(axes, (4, 5), ("parameters (count, log scale)",
                                                         "latency (ms, log scale, as measured by each chapter)"))):
        for j, name in enumerate(names):
            xs = [p[idx] for p in usable if p[0] == name and p[idx] is not None and p[idx] > 0]
            ys = [100 * p[3] for p in usable if p[0] == name and p[idx] is not None and p[idx] > 0]
            if xs:
                ax.scatter(xs, ys, s=30, marker=markers[j % len(markers)], color=f"C{j % 10}", label=name, zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.set_title(["Accuracy against size", "Accuracy against latency"][k])
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), title="family")
    fig.suptitle("Every recorded model of the book: accuracy against cost")
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=150, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return True


def build_appendix_a(chapters: list[Chapter]) -> tuple[str, list[tuple]]:
    fams = families(chapters)
    points = _figure_points(fams)
    has_fig = any(p[4] is not None or p[5] is not None for p in points)
    lines = [
        "<!-- GENERATED by tools/build_appendices.py from the stored notebooks: do not edit by hand. -->",
        "(appendix-a)=",
        "# Appendix A. Architectures and optimization methods compared",
        "",
        "Every architecture and every optimization method that a chapter measured, taken from the results",
        "tables stored in the executed notebooks (nothing on this page is typed by hand; "
        "`tools/build_appendices.py` writes it and a test fails when it is stale). Accuracy is in percent",
        "on the chapter's own test split; parameters and FLOPs are counts; bytes are the stored size in the",
        "format the chapter names; latency is the median in milliseconds on the machine that executed the",
        "chapter (see the run stamp on each chapter page), so compare latencies within a table, not across",
        f"chapters. \"{MISSING}\" marks a quantity a chapter did not measure. The chapters use different data",
        "(the 8×8 digits, MNIST-1D, the multimodal digits), so accuracies compare only within a family.",
        "",
    ]
    if has_fig:
        lines += [
            "```{figure} _generated/appendix_a_cost_accuracy.png",
            ":name: appendix-a-cost-accuracy",
            ":width: 100%",
            "",
            "Accuracy against parameters (left) and against latency (right) for every recorded model, one",
            "marker per family. Within a family, points towards the upper left are the better trade-offs.",
            "```",
            "",
            f"<!-- figure data digest: {figure_digest(points)} ({len(points)} points) -->",
            "",
        ]
    else:
        lines += ["No chapter has recorded a table with an accuracy and a cost yet, so there is no figure.", ""]
    if not fams:
        lines += ["No chapter has recorded a results table yet.", ""]
    seen: dict[str, int] = {}
    for f in fams:
        seen[f.name] = seen.get(f.name, 0) + 1
        title = f.name.replace("_", " ").replace("-", " ")
        title = title[:1].upper() + title[1:]
        suffix = f" ({seen[f.name]})" if seen[f.name] > 1 else ""
        lines += [f"## {md(title)}{suffix}", ""]
        src = f"From {{doc}}`/{f.chapter.doc}`"
        if f.caption:
            src += f", table \"{md(f.caption)}\""
        mapped = ", ".join(f"{q} ← “{md(f.columns[f.mapping[q][0]])}”" for q in QUANTITIES if q in f.mapping)
        src += f". Columns used: {mapped or 'none'}."
        if f.parsed:
            src += " (Read back from the displayed table, so the numbers carry the chapter's rounding.)"
        lines += [src, ""]
        lines += ["| model or method | accuracy (%) | parameters | FLOPs | bytes | latency (ms) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in f.rows:
            lat = MISSING if r["latency"] is None else f"{r['latency']:.4g}"
            lines.append(f"| {md(r['label'])} | {_acc_text(r['accuracy'])} | {fnum(r['parameters'])} | "
                         f"{fnum(r['FLOPs'])} | {fnum(r['bytes'])} | {lat} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n", points


# --------------------------------------------------------------------------- main
def build(root: Path) -> dict[Path, str]:
    chapters = read_book(root)
    a, points = build_appendix_a(chapters)
    return {LEDGER: build_ledger(chapters), APPENDIX_A: a, LEDGER_JSON: dumps_book(chapters), "_points": points}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate appendix A, the claims ledger and nnbook/resources/ledger.json "
                                             "from the stored notebooks.")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a generated file is stale")
    ap.add_argument("--root", type=Path, default=ROOT, help="the book's root folder (default: this checkout)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    pages = build(root)
    points = pages.pop("_points")
    stale = []
    for rel, text in pages.items():
        path = root / rel
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        if old != text:
            stale.append(rel)
            if not args.check:
                write_atomic(path, text)
    needs_fig = any(p[4] is not None or p[5] is not None for p in points)
    if args.check:
        if needs_fig and not (root / FIGURE).is_file():
            stale.append(FIGURE)
        for rel in stale:
            print(f"stale: {rel} (run python tools/build_appendices.py)")
        if not stale:
            print("appendices and the shipped ledger are up to date")
        return 1 if stale else 0
    if needs_fig:
        draw_figure(points, root / FIGURE)
    for rel in pages:
        print(f"{'wrote' if rel in stale else 'unchanged'}: {rel}")
    if needs_fig:
        print(f"wrote: {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
