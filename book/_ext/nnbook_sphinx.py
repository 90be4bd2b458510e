"""The book's own small Sphinx extension (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

It does four things to the rendered pages:

* **Run stamp.** Under the title of every chapter page it writes one line from the
  notebook's ``metadata.nnbook`` (written by ``tools/execute.py``):
  "Executed on DATE with nnbook X, PyTorch Y, Python Z on CPU-MODEL (N threads) in S s".
  A notebook without that record (or with an incomplete one) gets no line.
* **Chinese text is marked ``lang="zh"``.** Every run of CJK characters in the text (the
  glossary's 中文 column, for instance) is wrapped in ``<span lang="zh">`` so browsers pick a
  Chinese font and screen readers a Chinese voice; new glossary rows need no markup.
* **Each page script is included once.** With Sphinx 7 some extensions' inline scripts are
  registered twice (sphinx-thebe's ``const THEBE_JS_URL = ...`` then raises
  "Identifier 'THEBE_JS_URL' has already been declared" in the browser console); identical
  ``<script>`` entries are dropped before each page is written.
* **Numbers in tables never wrap.** Every table cell (``<td>``, in Markdown tables and in the
  HTML a notebook cell printed) whose whole text is a number, such as ``1,050,880``,
  ``0.910 ± 0.008``, ``20 / 20`` or ``≥ 100 x``, gets the class ``nnbook-num``, which
  ``book/_static/nnbook.css`` keeps on one line. The notebooks' stored outputs are untouched
  (nbval compares them); only the written page changes. ``tests/test_browser.py`` applies the
  same definition of a number when it checks that none wraps.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from docutils import nodes

CJK = "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
CJK_RUN = re.compile(f"[{CJK}]+(?:[ 0-9A-Za-z]*[{CJK}]+)*")
STAMP_KEYS = ("executed", "nnbook", "torch", "python", "cpu", "cpu_count", "wall_time_s")
SKIP_PARENTS = (nodes.literal_block, nodes.literal, nodes.raw, nodes.math, nodes.math_block, nodes.comment)


def stamp_text(meta) -> str | None:
    """The run-stamp sentence for a ``metadata.nnbook`` record, or ``None`` when it is missing.

    >>> stamp_text({"executed": "2026-11-21", "nnbook": "0.1.0", "torch": "2.5.1", "python": "3.11.9",
    ...             "cpu": "AMD EPYC 7B13", "cpu_count": 2, "wall_time_s": 31.4, "gpu": None})
    'Executed on 2026-11-21 with nnbook 0.1.0, PyTorch 2.5.1, Python 3.11.9 on AMD EPYC 7B13 (2 threads) in 31.4 s.'
    >>> stamp_text({}) is None
    True
    """
    if not isinstance(meta, dict) or any(meta.get(k) in (None, "") for k in STAMP_KEYS):
        return None
    try:
        seconds = float(meta["wall_time_s"])
        threads = int(meta["cpu_count"])
    except (TypeError, ValueError):
        return None
    hardware = f"{meta['cpu']} ({threads} thread{'s' if threads != 1 else ''})"
    if meta.get("gpu"):
        hardware += f" and {meta['gpu']}"
    return (f"Executed on {meta['executed']} with nnbook {meta['nnbook']}, PyTorch {meta['torch']}, "
            f"Python {meta['python']} on {hardware} in {seconds:.1f} s.")


def _notebook_meta(app, docname: str):
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".ipynb" or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("nnbook")
    except (OSError, ValueError):
        return None


def add_run_stamp(app, doctree) -> None:
    text = stamp_text(_notebook_meta(app, app.env.docname))
    if text is None:
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    para = nodes.paragraph("", "", nodes.Text(text), classes=["nnbook-runstamp"])
    titles = [i for i, child in enumerate(section.children) if isinstance(child, nodes.title)]
    section.insert(titles[0] + 1 if titles else 0, para)


def mark_chinese(app, doctree) -> None:
    for text in list(doctree.findall(nodes.Text)):
        parent = text.parent
        if parent is None or isinstance(parent, SKIP_PARENTS) or "language-zh" in parent.get("classes", []):
            continue
        s = str(text)
        if not CJK_RUN.search(s):
            continue
        pieces, pos = [], 0
        for m in CJK_RUN.finditer(s):
            if m.start() > pos:
                pieces.append(nodes.Text(s[pos:m.start()]))
            pieces.append(nodes.inline(m.group(), m.group(), classes=["language-zh"]))
            pos = m.end()
        if pos < len(s):
            pieces.append(nodes.Text(s[pos:]))
        parent.replace(text, pieces)


def _script_key(js):
    attrs = getattr(js, "attributes", {}) or {}
    # the same inline script is registered once with filename None and once with "" (so Sphinx keeps both)
    return (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items() if k != "priority")))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


#: one number: an optional sign or comparison, digits with separators, an exponent, a % or x after it
NUM_TOKEN = re.compile(r"[~≈≤≥<>±+\-−]?\d[\d,.]*(?:e[+\-−]?\d+)?(?:%|×|x)?")
#: what may stand between numbers in a cell: ± for a spread, – for a range, / for a count, a lone x or %
NUM_JOIN = re.compile(r"±|–|—|-|−|/|x|×|%|≤|≥|<|>|~|≈")
TD = re.compile(r"<td\b([^>]*)>(.*?)</td>", re.S)
TAG = re.compile(r"<[^>]+>")
CLASS_ATTR = re.compile(r"""\bclass=(["'])(.*?)\1""", re.S)


def is_number(text: str) -> bool:
    """Whether a table cell's text is a number (or numbers joined by ±, –, /, x): it must not wrap.

    >>> [is_number(t) for t in ("1,050,880", "0.910 ± 0.008", "20 / 20", "≥ 100 x", "-30", "3.2e-05", "98.0 %")]
    [True, True, True, True, True, True, True]
    >>> [is_number(t) for t in ("—", "GRU float32", "12 KB", "", "p50 ≤ 1 ms")]
    [False, False, False, False, False]
    """
    words = text.split()
    return (any(NUM_TOKEN.fullmatch(w) for w in words)
            and all(NUM_TOKEN.fullmatch(w) or NUM_JOIN.fullmatch(w) for w in words))


def mark_numeric_cells(body: str) -> str:
    """Add the class ``nnbook-num`` to every ``<td>`` of ``body`` (HTML) whose text is a number.

    >>> mark_numeric_cells('<td class="text-right"><p>1,050,880</p></td><td>MLP</td><td id="a" >3</td>')
    '<td class="text-right nnbook-num"><p>1,050,880</p></td><td>MLP</td><td id="a" class="nnbook-num">3</td>'
    """
    def mark(m: re.Match) -> str:
        attrs, inner = m.group(1), m.group(2)
        if "<table" in inner or not is_number(html.unescape(TAG.sub("", inner))):
            return m.group(0)
        c = CLASS_ATTR.search(attrs)
        if c is None:
            attrs = attrs.rstrip() + ' class="nnbook-num"'
        elif "nnbook-num" not in c.group(2).split():
            attrs = attrs[:c.start(2)] + (c.group(2) + " nnbook-num").strip() + attrs[c.end(2):]
        return f"<td{attrs}>{inner}</td>"

    return TD.sub(mark, body) if "<td" in body else body


def mark_numbers(app, pagename, templatename, context, doctree) -> None:
    if isinstance(context.get("body"), str):
        context["body"] = mark_numeric_cells(context["body"])


def setup(app):
    app.connect("doctree-read", add_run_stamp)
    app.connect("doctree-read", mark_chinese)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("html-page-context", mark_numbers)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
