"""The book as a reader sees it: every page in a real, headless Chromium, with the network off.

For every page of the built book (served on 127.0.0.1 by a thread of this test) it checks

* no error in the browser console (a failed script, a missing file, a request that left 127.0.0.1);
* every image loaded (``naturalWidth > 0``), and figures legible: >= 150 dpi, and the book
  style's smallest font (``nnbook.plot.MIN_FONT_PT``) >= 9 px at the size the page shows them;
* maths rendered offline by the bundled MathJax: every ``.math`` element holds MathJax output
  and no raw ``\\(``, ``\\)``, ``\\[``, ``\\]`` or ``$$`` is left in the text;
* every dropdown (exercise solution) is closed at first and opens on a click;
* every internal link resolves (the file exists, and so does the ``#fragment`` in it);
* nothing the reader cannot get at: no content outside the text column unless a scrolling box
  inside the column (the element itself or an ancestor, ``overflow-x: auto``/``scroll``) can bring
  it into view, no text cut off by an ``overflow: hidden`` box, and text outputs and code wrap;
  a table wider than the column is fine as long as it scrolls in its own box;
* table text: no word broken inside (``"parameter s"``; breaks at spaces and after hyphens are
  fine), no cell that could do so (``overflow-wrap: anywhere``, ``word-break: break-all``), and
  no number wrapping (a cell whose text is a number must be ``white-space: nowrap``; the book's
  Sphinx extension marks such cells ``td.nnbook-num``);
* one search box, no nbval markers or setup-cell text on the page, no Jupyter widget views
  (they need a CDN and a live kernel), and a run stamp under the title of every chapter.

Widths in pixels depend on the fonts a machine has, so the pages are checked under two **font
sets**, each given to Chromium as a private fontconfig file (``FONTCONFIG_FILE``, written by
``tools/fonts/fontsets.py``) that lists only the set's font folders:

* ``dejavu``: DejaVu only, what a fresh Debian has (``fonts-dejavu-core``). Its wide letters make
  it the hard case; CI runs this one.
* ``wide``: DejaVu plus Liberation (metric twins of Arial/Times/Courier, which the theme asks for)
  and Noto (``fonts-liberation fonts-noto-core``).

A set whose fonts are not installed is skipped, with the packages to install, except the one named
by ``$NNBOOK_FONT_SET`` (default ``dejavu``), which must run: under CI it fails instead. When a
browser starts, the test measures text in the set's families to make sure Chromium really uses
that set (and nothing else).

The checks themselves are tested on small hand-made pages (``test_checks_*``), so it is cheap
to see that each one fails when it should; ``test_missing_mathjax_is_caught`` removes the
bundled MathJax from a copy of the real build.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``; ``tools/ci_browser.sh`` does it in CI, with the fonts) and the ``selenium``
package. Without them the test is skipped, with the reason, except under CI (``CI=true``), where
it fails.

The book used is ``$NNBOOK_BOOK_HTML`` if set, else ``_build/html`` when it is newer than every
source of the book, else a fresh ``jupyter-book build -W`` into a temporary folder (~20 s).
Run:  ``pytest -q tests/test_browser.py``  (a minute or two per font set);
``pytest -q tests/test_browser.py -k dejavu`` for one set.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "fonts"))
import fontsets  # noqa: E402  (tools/fonts/fontsets.py: the font sets and their fontconfig files)

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import nnbook_sphinx  # noqa: E402  (the book's Sphinx extension: it marks numeric table cells)

REQUIRED_FONT_SET = os.environ.get("NNBOOK_FONT_SET", "") or fontsets.DEFAULT_SET
WINDOW = (1280, 2000)
MIN_FIGURE_FONT_PX = 9.0
MIN_FIGURE_DPI = 150

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None


def _missing_browser() -> str | None:
    missing = []
    if webdriver is None:
        missing.append("the Python package selenium (pip install -r requirements.txt)")
    if CHROMIUM is None:
        missing.append("Chromium (apt-get install -y chromium)")
    if CHROMEDRIVER is None:
        missing.append("chromedriver (apt-get install -y chromium-driver)")
    if not missing:
        return None
    return "browser test needs " + " and ".join(missing) + "; tools/ci_browser.sh installs them"


def _skip_or_fail(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: .ci/run must install them, see tools/ci_browser.sh)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- serving and driving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


class Site:
    """A folder served on 127.0.0.1 (a free port) by a daemon thread."""

    def __init__(self, root: Path):
        self.root = Path(root)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def make_driver(user_data_dir: Path, fonts_conf: Path | None = None):
    """Headless Debian Chromium through Debian's chromedriver; nothing but 127.0.0.1 is reachable.

    With ``fonts_conf`` (a fonts.conf from ``tools/fonts/fontsets.py``) Chromium sees only those fonts.
    """
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                "--disable-default-apps", "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                # network off: no name resolves (except 127.0.0.1), and anything else goes to a dead proxy
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ)
    if fonts_conf is not None:
        env["FONTCONFIG_FILE"] = str(fonts_conf)  # chromedriver passes its environment on to Chromium
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, env=env))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


# --------------------------------------------------------------------------- in-page checks (JS)

JS_WAIT_MATHJAX = r"""
const done = arguments[arguments.length - 1];
const t0 = Date.now();
const hasMath = document.querySelector('.math, .amsmath') !== null;
(function poll() {
  if (document.readyState !== 'complete') { return setTimeout(poll, 50); }
  if (!hasMath) { return done('no maths'); }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    return MathJax.startup.promise.then(() => done('ok'), (e) => done('MathJax failed: ' + e));
  }
  if (Date.now() - t0 > 15000) { return done('MathJax did not start'); }
  setTimeout(poll, 100);
})();
"""

JS_COLUMN = r"""
function nnbookColumn() {
  const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const r = col.getBoundingClientRect(), cs = getComputedStyle(col);
  return {el: col, left: r.left + parseFloat(cs.paddingLeft), right: r.right - parseFloat(cs.paddingRight)};
}
function nnbookLabel(el) {
  const text = (el.innerText || el.getAttribute('src') || '').trim().replace(/\s+/g, ' ');
  return el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '')
         + ' "' + text.slice(0, 70) + '"';
}
function nnbookShown(el) {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0;
}
"""

JS_MATH = JS_COLUMN + r"""
const col = nnbookColumn().el, problems = [];
const unrendered = [...col.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'));
if (unrendered.length) problems.push(unrendered.length + ' formula(s) not rendered by MathJax, e.g. ' + nnbookLabel(unrendered[0]));
const walker = document.createTreeWalker(col, NodeFilter.SHOW_TEXT, {acceptNode(n) {
  const p = n.parentElement;
  if (!p || p.closest('pre, code, script, style, textarea, mjx-container, .highlight, .MathJax')) return NodeFilter.FILTER_REJECT;
  return NodeFilter.FILTER_ACCEPT;
}});
let text = '';
while (walker.nextNode()) text += walker.currentNode.nodeValue + ' ';
for (const tok of ['\\(', '\\)', '\\[', '\\]', '$$']) {
  const i = text.indexOf(tok);
  if (i >= 0) problems.push('raw TeX ' + JSON.stringify(tok) + ' in the text: ...' + text.slice(Math.max(0, i - 40), i + 40).replace(/\s+/g, ' ') + '...');
}
return problems;
"""

JS_IMAGES = JS_COLUMN + r"""
const problems = [], figures = [];
const colW = nnbookColumn().right - nnbookColumn().left;
for (const img of document.images) {
  if (!(img.complete && img.naturalWidth > 0)) { problems.push('image not loaded: ' + img.getAttribute('src')); continue; }
  if (img.closest('.cell_output') && nnbookShown(img)) {
    figures.push({src: img.currentSrc || img.src, natural: img.naturalWidth, shown: img.getBoundingClientRect().width});
  }
}
return {problems: problems, figures: figures};
"""

JS_OVERFLOW = JS_COLUMN + r"""
// What a reader cannot get at, whatever the fonts: (1) anything outside the text column that no
// scrolling box inside the column brings into view, (2) text cut off by an overflow-hidden box,
// (3) text outputs and code that scroll sideways instead of wrapping (the book wraps them).
const c = nnbookColumn(), problems = [], slack = 1, limit = 8;
const kinds = [['div.cell_output pre, div.output pre', 'text output'], ['div.cell_input pre', 'code cell'],
               ['div.highlight pre', 'code block'], ['table', 'table'], ['img, svg', 'image'],
               ['mjx-container[display="true"], div.math', 'display equation']];
function what(el) {
  for (const [sel, name] of kinds) if (el.matches(sel)) return name;
  return 'content';
}
function hidden(el) {  // visually hidden on purpose (MathJax's speech text, skip links, ...)
  for (let a = el; a && a !== c.el; a = a.parentElement) {
    const cs = getComputedStyle(a);
    if ((cs.clip && cs.clip !== 'auto') || (cs.clipPath && cs.clipPath !== 'none') || cs.visibility === 'hidden'
        || a.tagName === 'MJX-ASSISTIVE-MML' || cs.position === 'fixed') return true;
  }
  return false;
}
const clips = o => o === 'hidden' || o === 'clip';
const range = document.createRange();
function textRects(el, deep) {  // the line boxes of el's own text (deep: of all its visible text)
  const out = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {acceptNode(n) {
    if (n.nodeType === Node.TEXT_NODE) return n.nodeValue.trim() ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT;
    if (!deep || n.tagName === 'MJX-ASSISTIVE-MML' || getComputedStyle(n).visibility === 'hidden') return NodeFilter.FILTER_REJECT;
    return NodeFilter.FILTER_SKIP;  // look inside, do not return the element itself
  }});
  while (walker.nextNode()) { range.selectNodeContents(walker.currentNode); out.push(...range.getClientRects()); }
  return out;
}
// null when every part of el can be seen (perhaps after scrolling a box), else what hides it
function lost(el) {
  const r = el.getBoundingClientRect();
  let left = r.left, right = r.right;
  if (getComputedStyle(el).overflowX === 'visible')  // its own text may spill out of its box
    for (const t of textRects(el, false)) { left = Math.min(left, t.left); right = Math.max(right, t.right); }
  if (left >= c.left - slack && right <= c.right + slack) return null;
  for (let a = el.parentElement; a && a !== c.el && c.el.contains(a); a = a.parentElement) {
    const o = getComputedStyle(a).overflowX;
    if (o === 'visible') continue;
    const ar = a.getBoundingClientRect(), inL = ar.left + a.clientLeft, inR = inL + a.clientWidth;
    if (left >= inL - slack && right <= inR + slack) continue;  // a's box shows all of it
    if (clips(o)) return 'cut off by ' + nnbookLabel(a) + ' (overflow-x: ' + o + ', no scrolling)';
    const origin = inL - a.scrollLeft;
    if (left < origin - slack || right > origin + a.scrollWidth + slack)
      return 'partly out of reach of its scrolling box ' + nnbookLabel(a);
    left = ar.left; right = ar.right;  // all of it scrolls into a's box; is a's box itself in view?
    if (left >= c.left - slack && right <= c.right + slack) return null;
  }
  return 'wider than the text column and not in a scrolling box (' + Math.round(right - left) + ' px > '
         + Math.round(c.right - c.left) + ' px, ' + Math.round(Math.max(0, right - c.right)) + ' px past its right edge)';
}
const all = [...c.el.querySelectorAll('*')].filter(el => nnbookShown(el));
const reported = [];
for (const el of all) {  // (1) out of the column, out of reach
  if (reported.some(p => p.contains(el))) continue;
  const why = lost(el);
  if (why && !hidden(el)) { reported.push(el); problems.push(what(el) + ' ' + why + ': ' + nnbookLabel(el)); }
}
for (const el of all) {  // (2) text cut off by a box that clips without scrolling
  const cs = getComputedStyle(el);
  if (!(clips(cs.overflowX) && el.scrollWidth > el.clientWidth + slack)) continue;
  if (reported.some(p => p.contains(el) || el.contains(p)) || hidden(el)) continue;
  const r = el.getBoundingClientRect(), inL = r.left + el.clientLeft, inR = inL + el.clientWidth;
  // what overflows may be visually hidden on purpose (MathJax's MathML for screen readers): measure the text
  const past = textRects(el, true).reduce((m, t) => Math.max(m, t.right - inR, inL - t.left), 0);
  if (past <= slack) continue;
  reported.push(el);
  problems.push(what(el) + ' cut off (' + Math.round(past) + ' px of its text outside a ' + el.clientWidth
                + ' px box with overflow-x: ' + cs.overflowX + '): ' + nnbookLabel(el));
}
for (const [sel, name] of kinds.slice(0, 3)) {  // (3) outputs and code wrap, they do not scroll
  for (const el of c.el.querySelectorAll(sel)) {
    if (!nnbookShown(el) || reported.some(p => p.contains(el) || el.contains(p))) continue;
    if (el.scrollWidth > el.clientWidth + slack)
      problems.push(name + ' does not wrap (' + el.scrollWidth + ' px of content scroll in ' + el.clientWidth
                    + ' px; the book wraps outputs and code, book/_static/nnbook.css): ' + nnbookLabel(el));
  }
}
return problems.length > limit ? problems.slice(0, limit).concat(['... and ' + (problems.length - limit) + ' more'])
                               : problems;
"""

JS_TABLE_TEXT = JS_COLUMN + r"""
// Table text as the reader sees it: no word broken inside ("parameter s", "1,050,88 0"), no cell
// styled so that it could be, and no number over two lines. A number is what
// book/_ext/nnbook_sphinx.py's is_number() calls one (NUM_TOKEN, NUM_JOIN are its regexes).
const c = nnbookColumn(), found = new Map();
function problem(kind, label) {  // one line per kind of problem: how many cells, the first few
  if (!found.has(kind)) found.set(kind, []);
  found.get(kind).push(label);
}
const NUM_TOKEN = new RegExp('^(?:' + arguments[0] + ')$', 'u'), NUM_JOIN = new RegExp('^(?:' + arguments[1] + ')$', 'u');
// a word: letters, digits and _ (and 1,050,880 or 0.910 whole); Chinese and Japanese break between any
// two characters, so their characters are not words here
const WC = String.raw`(?:(?![\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}\p{sc=Hangul}])[\p{L}\p{N}_])`;
const WORD = new RegExp(WC + '+(?:[.,\'\u2019]' + WC + '+)*', 'gu');
function isNumber(text) {
  const w = text.trim().split(/\s+/).filter(Boolean);
  return w.some(t => NUM_TOKEN.test(t)) && w.every(t => NUM_TOKEN.test(t) || NUM_JOIN.test(t));
}
function lineCount(rects) {
  const tops = [];
  for (const r of rects) {
    if (r.width < 0.5 || r.height < 0.5) continue;
    if (!tops.some(t => Math.abs(t - r.top) < r.height / 2)) tops.push(r.top);
  }
  return tops.length;
}
const range = document.createRange();
for (const cell of c.el.querySelectorAll('th, td')) {
  if (!nnbookShown(cell)) continue;
  const kind = cell.tagName === 'TH' ? 'table header' : 'table cell', label = nnbookLabel(cell);
  const risky = [cell, ...cell.querySelectorAll('*')].map(e => getComputedStyle(e))
    .find(cs => cs.overflowWrap === 'anywhere' || cs.wordBreak === 'break-all' || cs.wordBreak === 'break-word');
  if (risky) problem(kind + ' may break words inside (overflow-wrap: ' + risky.overflowWrap + ', word-break: '
                     + risky.wordBreak + ')', label);
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT, {acceptNode(n) {
    return n.parentElement.closest('mjx-container, script, style') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT;
  }});
  const rects = [];
  let broken = null;
  while (walker.nextNode()) {
    const n = walker.currentNode;
    for (const m of n.nodeValue.matchAll(WORD)) {
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      if (!broken && lineCount(range.getClientRects()) > 1) broken = m[0];
    }
    range.selectNodeContents(n);
    rects.push(...range.getClientRects());
  }
  if (broken) problem(kind + ' breaks a word across lines', '"' + broken + '" in ' + label);
  if (cell.tagName === 'TD' && isNumber(cell.innerText)) {
    const cs = getComputedStyle(cell), wrapMode = cs.textWrapMode || '';
    const canWrap = /[\s\u2013\u2014]/.test(cell.innerText.trim());  // "1,050,880" cannot, "0.91 ± 0.01" can
    if (canWrap && !(wrapMode === 'nowrap' || cs.whiteSpace === 'nowrap' || cs.whiteSpace === 'pre'))
      problem('number in a table cell may wrap (white-space: ' + cs.whiteSpace + '; td.nnbook-num is nowrap)', label);
    else if (lineCount(rects) > 1) problem('number wraps over several lines', label);
  }
}
return [...found].map(([kind, labels]) => kind + ': ' + labels.length + ' cell(s), e.g. ' + labels.slice(0, 3).join(', '));
"""

JS_FONT_WIDTHS = r"""
// the width of one line in each family, falling back to monospace: a family Chromium cannot find
// gives monospace's width
const out = {};
for (const fam of arguments[0].concat(['monospace'])) {
  const s = document.createElement('span');
  s.style.cssText = 'font-size: 40px; white-space: nowrap; position: absolute; left: 0; top: 0';
  s.style.fontFamily = fam === 'monospace' ? 'monospace' : '"' + fam + '", monospace';
  s.textContent = 'Hamburgefonstiv parameters 1,050,880';
  document.body.appendChild(s);
  out[fam] = s.getBoundingClientRect().width;
  s.remove();
}
return out;
"""

JS_OPEN_DETAILS = "document.querySelectorAll('details').forEach(d => { d.open = true; }); return true;"

JS_DROPDOWN_STATE = JS_COLUMN + r"""
const el = arguments[0];
const body = [...el.children].filter(ch => !ch.classList.contains('admonition-title'));
return body.some(ch => nnbookShown(ch));
"""

JS_PAGE_FACTS = JS_COLUMN + r"""
const col = nnbookColumn().el;
const searches = [...document.querySelectorAll('.search-button-field, form.bd-search, input[type=search]')]
  .filter(e => nnbookShown(e) && !e.closest('.search-button__wrapper') && !col.contains(e));
const links = [...document.querySelectorAll('a[href]')].map(a => ({href: a.href, raw: a.getAttribute('href')}));
const ids = [...document.querySelectorAll('[id]')].map(e => e.id).concat([...document.querySelectorAll('a[name]')].map(a => a.name));
return {
  searches: searches.length,
  text: col.innerText,
  links: links,
  ids: ids,
  widgets: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  stamp: (document.querySelector('p.nnbook-runstamp') || {}).innerText || null,
  title: document.title,
};
"""

STAMP_RE = re.compile(r"^Executed on \d{4}-\d\d-\d\d with nnbook \S+, PyTorch \S+, Python \S+ on .+ \(\d+ threads?\)"
                      r"( and .+)? in \d+(\.\d)? s\.$")
SCAFFOLDING = ("NBVAL_", "stamped by tools/stamp_setup.py")


# --------------------------------------------------------------------------- checks (Python side)


def png_dpi(path: Path) -> float | None:
    """Dots per inch stored in a PNG's pHYs chunk (matplotlib writes it), or None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    i = data.find(b"pHYs")
    if data[:8] != b"\x89PNG\r\n\x1a\n" or i < 0:
        return None
    x, _y, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    return x * 0.0254 if unit == 1 and x > 0 else None


def figure_problems(figures: list[dict], site: Site, min_font_pt: float) -> list[str]:
    """Figures below ``MIN_FIGURE_DPI`` or whose smallest style font is shown below 9 px."""
    problems = []
    for fig in figures:
        path = url_to_path(fig["src"], site)
        dpi = png_dpi(path) if path is not None else None
        if dpi is None:
            continue  # not a matplotlib PNG (an SVG, a JPEG...): nothing to measure
        name = path.name[:16]
        if dpi < MIN_FIGURE_DPI - 1:
            problems.append(f"figure {name}... rendered at {dpi:.0f} dpi (< {MIN_FIGURE_DPI}): re-execute with nnbook.plot's style")
        width_in = fig["natural"] / dpi
        px_per_pt = fig["shown"] / (72.0 * width_in)
        if min_font_pt * px_per_pt < MIN_FIGURE_FONT_PX - 0.05:
            problems.append(
                f"figure {name}... is {width_in:.1f} in wide and shown {fig['shown']:.0f} px wide: its {min_font_pt:g}-pt "
                f"labels are {min_font_pt * px_per_pt:.1f} px (< {MIN_FIGURE_FONT_PX:g}); make it narrower "
                f"(nnbook.plot.page_figsize) or its fonts larger")
    return problems


def url_to_path(url: str, site: Site) -> Path | None:
    """The file under the served folder that an internal URL points to (None for other origins)."""
    if not url.startswith(site.base):
        return None
    rel = unquote(urlsplit(url).path).lstrip("/")
    path = site.root / rel
    if rel == "" or rel.endswith("/") or path.is_dir():
        path = path / "index.html"
    return path


@functools.lru_cache(maxsize=256)
def _ids_in_file(path: Path) -> frozenset:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r'\b(?:id|name)="([^"]+)"', text))


def link_problems(links: list[dict], page_url: str, page_ids: list[str], site: Site) -> list[str]:
    """Internal links whose file or ``#fragment`` does not exist."""
    problems, seen = [], set()
    page_path = url_to_path(page_url.split("#")[0], site)
    for link in links:
        href = link["href"]
        if href in seen or not href.startswith(site.base):
            continue  # external (not reachable in this test), mailto:, javascript: ...
        seen.add(href)
        target = url_to_path(href.split("#")[0], site)
        frag = unquote(href.split("#", 1)[1]) if "#" in href else ""
        if target is None or not target.is_file():
            problems.append(f"broken link {link['raw']!r}: no file {target.relative_to(site.root) if target else href}")
            continue
        if not frag or target.suffix != ".html":
            continue
        ids = set(page_ids) if target == page_path else _ids_in_file(target)
        if frag not in ids:
            problems.append(f"broken link {link['raw']!r}: no id {frag!r} in {target.relative_to(site.root)}")
    return problems


def console_problems(driver) -> list[str]:
    return [f"console {e['level']}: {e['message'][:300]}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _click(driver, element) -> None:
    """A real mouse click on ``element``, scrolled to the middle of the window first (no smooth scrolling)."""
    from selenium.common.exceptions import ElementClickInterceptedException

    for _ in range(3):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", element)
        try:
            element.click()
            return
        except ElementClickInterceptedException:
            time.sleep(0.3)
    element.click()  # let the last failure raise


def dropdown_problems(driver) -> list[str]:
    problems = []
    dropdowns = driver.find_elements(By.CSS_SELECTOR, "article .admonition.dropdown, article details.admonition.dropdown")
    for i, el in enumerate(dropdowns):
        title = (el.find_elements(By.CSS_SELECTOR, ".admonition-title, summary") or [None])[0]
        label = (title.text.strip() if title is not None else "") or f"dropdown {i + 1}"
        if driver.execute_script(JS_DROPDOWN_STATE, el):
            problems.append(f"dropdown {label!r} is open before any click (solutions must start hidden)")
            continue
        if title is None:
            problems.append(f"dropdown {label!r} has no title to click")
            continue
        _click(driver, title)
        deadline = time.time() + 3
        while time.time() < deadline and not driver.execute_script(JS_DROPDOWN_STATE, el):
            time.sleep(0.05)
        if not driver.execute_script(JS_DROPDOWN_STATE, el):
            problems.append(f"dropdown {label!r} does not open on a click")
    return problems


def _wait_loaded(driver, timeout: float = 20) -> None:
    """Wait until the page (after any ``<meta http-equiv="refresh">`` redirect, as index.html has) has loaded."""
    from selenium.common.exceptions import WebDriverException

    js = "return document.readyState === 'complete' && !document.querySelector('meta[http-equiv=\"refresh\"]');"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if driver.execute_script(js):
                return
        except WebDriverException:  # the redirect replaced the document while the script ran
            pass
        time.sleep(0.1)


def layout_problems(driver) -> list[str]:
    """What the reader cannot get at on the loaded page, and table text broken inside words or numbers."""
    return (driver.execute_script(JS_OVERFLOW)
            + driver.execute_script(JS_TABLE_TEXT, nnbook_sphinx.NUM_TOKEN.pattern, nnbook_sphinx.NUM_JOIN.pattern))


def font_problems(driver, font_set: str) -> list[str]:
    """Whether Chromium sees exactly the families of ``font_set`` (a family it lacks measures as monospace)."""
    driver.get("about:blank")
    families = dict(fontsets.FAMILIES)
    widths = driver.execute_script(JS_FONT_WIDTHS, list(families.values()))
    mono, problems = widths["monospace"], []
    for folder, fam in families.items():
        present = abs(widths[fam] - mono) > 1
        wanted = folder in fontsets.FONT_SETS[font_set]
        if present != wanted:
            problems.append(f"{fam} is {'' if present else 'not '}available to Chromium under font set {font_set!r} "
                            f"({widths[fam]:.1f} px against monospace's {mono:.1f} px)")
    return problems


def check_page(driver, site: Site, rel: str, *, chapter: bool = False, min_font_pt: float = 10) -> list[str]:
    """Load one page and return every problem found on it (an empty list when it is fine)."""
    driver.get_log("browser")  # drop what earlier pages logged
    url = site.base + rel
    driver.get(url)
    _wait_loaded(driver)
    problems = []
    state = driver.execute_async_script(JS_WAIT_MATHJAX)
    if state not in ("ok", "no maths"):
        problems.append(state)
    facts = driver.execute_script(JS_PAGE_FACTS)  # before anything is opened: what the reader sees
    if facts["searches"] != 1:
        problems.append(f"{facts['searches']} search boxes on the page (expected 1)")
    for marker in SCAFFOLDING:
        if marker in facts["text"]:
            i = facts["text"].index(marker)
            problems.append(f"scaffolding visible on the page: ...{facts['text'][max(0, i - 40):i + 60]!r}...")
    if facts["widgets"]:
        problems.append(f"{facts['widgets']} Jupyter widget view(s): they need a CDN and a live kernel, so the page "
                        "shows nothing there; store no widget output (tag the cell remove-output, show a static figure)")
    if chapter and not (facts["stamp"] and STAMP_RE.match(facts["stamp"].strip())):
        problems.append(f"no run stamp under the chapter title (got {facts['stamp']!r}): re-execute with tools/execute.py")
    problems += driver.execute_script(JS_MATH)
    images = driver.execute_script(JS_IMAGES)
    problems += images["problems"]
    problems += figure_problems(images["figures"], site, min_font_pt)
    problems += dropdown_problems(driver)
    driver.execute_script(JS_OPEN_DETAILS)  # hidden code cells too: nothing may overflow once opened
    problems += layout_problems(driver)
    problems += link_problems(facts["links"], driver.current_url, facts["ids"], site)
    problems += console_problems(driver)
    return problems


# --------------------------------------------------------------------------- fixtures


def book_pages() -> list[tuple[str, bool]]:
    """``(path of the HTML page, is it a chapter)`` for every page in _toc.yml, plus the index pages."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):  # sections too: a chapter's later notebooks (4b, 5b, 5c)
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    pages = [("index.html", False)] + [(f"{f}.html", f.startswith("chapters/")) for f in files]
    return pages + [("genindex.html", False), ("search.html", False)]


def _book_sources() -> list[Path]:
    out = [ROOT / "_config.yml", ROOT / "_toc.yml", *ROOT.glob("chapters/*.ipynb")]
    return out + [p for p in (ROOT / "book").rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def _fresh_build(html: Path) -> bool:
    info = html / ".buildinfo"
    if not info.is_file() or not (html / "index.html").is_file():
        return False
    built = info.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _book_sources())


@pytest.fixture(scope="module")
def browser_ready():
    reason = _missing_browser()
    if reason:
        _skip_or_fail(reason)
    return True


def font_set_conf(name: str, folder: Path) -> Path:
    """The fonts.conf of font set ``name`` in ``folder``; skips when its fonts are missing, except for the
    set named by NNBOOK_FONT_SET (default ``dejavu``), which must run (it fails under CI=true)."""
    if REQUIRED_FONT_SET not in fontsets.FONT_SETS:
        pytest.fail(f"NNBOOK_FONT_SET={REQUIRED_FONT_SET!r} is not a font set; known: {', '.join(fontsets.FONT_SETS)}")
    reason = fontsets.missing(name)
    if reason:
        if name == REQUIRED_FONT_SET:
            _skip_or_fail(f"{reason}; it is NNBOOK_FONT_SET's (default {fontsets.DEFAULT_SET!r}), so it must run")
        pytest.skip(f"{reason}; only NNBOOK_FONT_SET={REQUIRED_FONT_SET!r} must run")
    return fontsets.write_fonts_conf(name, folder)


@pytest.fixture(scope="module", params=sorted(fontsets.FONT_SETS))
def font_set(request, tmp_path_factory, browser_ready) -> tuple[str, Path]:
    """``(name, fonts.conf)`` of each font set (see the module's docstring)."""
    return request.param, font_set_conf(request.param, tmp_path_factory.mktemp(f"fontconfig-{request.param}"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory, font_set):
    name, conf = font_set
    driver = make_driver(tmp_path_factory.mktemp(f"chromium-profile-{name}"), conf)
    try:
        problems = font_problems(driver, name)
        assert not problems, "Chromium does not use the font set's fontconfig file (FONTCONFIG_FILE):\n  - " + \
            "\n  - ".join(problems)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def book_html(tmp_path_factory, browser_ready) -> Path:
    if os.environ.get("NNBOOK_BOOK_HTML"):
        html = Path(os.environ["NNBOOK_BOOK_HTML"]).resolve()
        assert (html / "index.html").is_file(), f"NNBOOK_BOOK_HTML={html} holds no built book"
        return html
    if _fresh_build(ROOT / "_build" / "html"):
        return ROOT / "_build" / "html"
    out = tmp_path_factory.mktemp("book-build")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", "-W", "--path-output", str(out), str(ROOT)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"jupyter-book build -W failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def book_site(book_html):
    site = Site(book_html)
    yield site
    site.close()


def _min_font_pt() -> float:
    from nnbook.plot import MIN_FONT_PT

    return float(MIN_FONT_PT)


# --------------------------------------------------------------------------- the book


@pytest.mark.parametrize("page,chapter", book_pages(), ids=[p for p, _ in book_pages()])
def test_page(browser, book_site, page, chapter):
    assert (book_site.root / page).is_file(), f"{page} was not built"
    problems = check_page(browser, book_site, page, chapter=chapter, min_font_pt=_min_font_pt())
    assert not problems, f"{page}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems)


def test_missing_mathjax_is_caught(browser, book_html, tmp_path):
    """Without the bundled MathJax, a page with maths must fail the maths check (and log an error)."""
    copy = tmp_path / "html"
    shutil.copytree(book_html, copy, ignore=shutil.ignore_patterns("_images", "_sources", "*.pickle"))
    shutil.rmtree(copy / "_static" / "mathjax")
    page = next(p for p, ch in book_pages() if ch and "class=\"math" in (copy / p).read_text(encoding="utf-8"))
    site = Site(copy)
    try:
        browser.get_log("browser")
        browser.get(site.base + page)
        browser.execute_async_script(JS_WAIT_MATHJAX)
        math = browser.execute_script(JS_MATH)
        console = console_problems(browser)
    finally:
        site.close()
    assert any("not rendered by MathJax" in p for p in math), math
    assert any("mathjax" in p.lower() for p in console), console


# --------------------------------------------------------------------------- the checks themselves

GOOD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>good</title>
<link rel="icon" href="data:,">
<style>article.bd-article{width:600px;padding:0 20px} pre{white-space:pre-wrap}
.toggle-hidden > :not(.admonition-title){display:none}</style></head>
<body><button class="search-button-field">Search</button>
<article class="bd-article"><h1 id="top">Good</h1>
<p>Plain text, a <a href="#top">link to the top</a> and <a href="other.html#here">one to another page</a>.</p>
<div class="cell_output"><div class="output"><pre>short output</pre></div></div>
<table><tr><td>1</td><td>2</td></tr></table>
<div style="overflow-x:auto"><table style="width:900px"><tr><th>a wide table</th><th>in a scrolling box</th></tr>
<tr><td>is fine</td><td style="white-space:nowrap">1,050,880</td></tr></table></div>
<table style="width:150px"><tr><th>parameters per layer</th><th>bytes</th></tr>
<tr><td style="white-space:nowrap">0.910 &plusmn; 0.008</td><td style="white-space:nowrap">20 / 20</td></tr></table>
<div class="admonition dropdown toggle-hidden"><p class="admonition-title">Solution</p><p>the answer</p></div>
<img src="dot.png" alt="dot">
</article>
<script>document.querySelectorAll('.dropdown .admonition-title').forEach(t =>
  t.addEventListener('click', () => t.parentElement.classList.toggle('toggle-hidden')));</script>
</body></html>"""

BAD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bad</title>
<link rel="icon" href="data:,">
<style>article.bd-article{width:600px;padding:0 20px} .cell_output pre{white-space:pre;overflow-x:auto}</style></head>
<body><button class="search-button-field">Search</button><button class="search-button-field">Search</button>
<article class="bd-article"><h1>Bad</h1>
<p>A formula left raw: \\(a = \\sigma(z)\\) and $$E = mc^2$$</p>
<span class="math notranslate nohighlight">\\(x\\)</span>
<div class="cell_output"><div class="output"><pre>{long}</pre></div></div>
<table style="width:900px"><tr><td>a table wider than the column</td></tr></table>
<div style="overflow:hidden"><p style="white-space:nowrap">{long}</p></div>
<table style="width:120px;table-layout:fixed"><tr><th style="overflow-wrap:anywhere">parameters</th><th>bytes</th></tr>
<tr><td style="white-space:normal">0.910 &plusmn; 0.008</td><td>2</td></tr></table>
<div class="admonition dropdown"><p class="admonition-title">Solution</p><p>shown at once</p></div>
<p># NBVAL_IGNORE_OUTPUT</p>
<img src="missing.png" alt="missing">
<a href="nowhere.html">a broken link</a> <a href="other.html#not-there">a missing anchor</a>
</article>
<script>console.error("boom");</script>
</body></html>"""

# a 1x1 PNG
DOT_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture(scope="module")
def handmade_site(tmp_path_factory, browser_ready):
    root = tmp_path_factory.mktemp("handmade")
    (root / "good.html").write_text(GOOD_PAGE, encoding="utf-8")
    (root / "bad.html").write_text(BAD_PAGE.replace("{long}", "x = " + "9" * 300), encoding="utf-8")
    (root / "other.html").write_text('<!doctype html><html><body><p id="here">here</p></body></html>', encoding="utf-8")
    (root / "dot.png").write_bytes(DOT_PNG)
    site = Site(root)
    yield site
    site.close()


def test_checks_pass_a_good_page(browser, handmade_site):
    assert check_page(browser, handmade_site, "good.html") == []


def test_checks_catch_every_defect_of_a_bad_page(browser, handmade_site):
    problems = check_page(browser, handmade_site, "bad.html", chapter=True)
    report = "\n".join(problems)
    expected = {
        "two search boxes": "2 search boxes",
        "unrendered formula": "not rendered by MathJax",
        "raw \\(": 'raw TeX "\\\\("',
        "raw $$": 'raw TeX "$$"',
        "broken image": "image not loaded: missing.png",
        "unwrapped output": "text output does not wrap",
        "wide table": "table wider than the text column and not in a scrolling box",
        "cut-off text": "cut off by div",
        "mid-word header": 'table header breaks a word across lines: 1 cell(s), e.g. "parameters"',
        "header style": "table header may break words inside (overflow-wrap: anywhere",
        "wrapping number": "number in a table cell may wrap",
        "open dropdown": "open before any click",
        "scaffolding": "scaffolding visible",
        "missing run stamp": "no run stamp",
        "broken link": "broken link 'nowhere.html'",
        "missing anchor": "no id 'not-there'",
        "console error": "console SEVERE",
    }
    missed = [what for what, needle in expected.items() if needle not in report]
    assert not missed, f"not caught: {missed}\nreport:\n{report}"


def _layout_page(body: str) -> str:
    return ('<!doctype html><html><head><meta charset="utf-8"><title>layout</title><link rel="icon" href="data:,">'
            "<style>body{margin:0} article.bd-article{width:600px;padding:0 20px} td,th{padding:2px 6px}</style></head>"
            f'<body><article class="bd-article">{body}</article></body></html>')


WIDE_TABLE = ('<table><tr><th>model</th><th>' + "</th><th>".join(f"column {i}" for i in range(12)) + "</th></tr>"
              '<tr><td>GRU</td><td style="white-space:nowrap">' + "</td><td>".join(["1,050,880"] * 12) + "</td></tr></table>")
NARROW = '<table style="width:130px;table-layout:fixed">'
# (page body, what the layout checks must report: None when nothing)
LAYOUT_CASES = {
    "wide-table-no-scroll": (WIDE_TABLE, "table wider than the text column and not in a scrolling box"),
    "wide-table-in-scroll-box": (f'<div style="overflow-x:auto">{WIDE_TABLE}</div>', None),
    "wide-table-is-scroll-box": (WIDE_TABLE.replace("<table>", '<table style="display:block;overflow-x:auto">'), None),
    "scroll-box-wider-than-column": (f'<div style="overflow-x:auto;width:900px">{WIDE_TABLE}</div>',
                                     "wider than the text column and not in a scrolling box"),
    "table-in-hidden-box": (f'<div style="overflow:hidden">{WIDE_TABLE}</div>', "cut off by div"),
    "text-cut-off": ('<p style="overflow:hidden;white-space:nowrap">' + "a long line " * 80 + "</p>", "content cut off"),
    "image-past-column": ('<img src="dot.png" style="width:800px;height:4px">', "image wider than the text column"),
    "header-breaks-mid-word": (NARROW + '<tr><th style="overflow-wrap:break-word">parameters</th><th>b</th></tr></table>',
                               'table header breaks a word across lines: 1 cell(s), e.g. "parameters"'),
    "header-may-break-anywhere": ('<table><tr><th style="word-break:break-all">p</th></tr></table>',
                                  "table header may break words inside (overflow-wrap: normal, word-break: break-all)"),
    "header-wraps-at-spaces": (NARROW + "<tr><th>parameters per layer</th><th>b</th></tr></table>", None),
    "number-breaks-mid-number": (NARROW + '<tr><td style="overflow-wrap:break-word">1,050,880,123</td>'
                                 "<td>b</td></tr></table>", 'table cell breaks a word across lines: 1 cell(s), e.g. "1,050,880,123"'),
    "number-may-wrap": (NARROW + "<tr><td>0.910 &plusmn; 0.008</td><td>b</td></tr></table>",
                        "number in a table cell may wrap (white-space: normal"),
    "number-wraps": (NARROW + '<tr><td style="white-space:nowrap">0.910<br>&plusmn; 0.008</td><td>b</td></tr></table>',
                     "number wraps over several lines"),
    "number-on-one-line": (NARROW + '<tr><td class="nnbook-num" style="white-space:nowrap">0.910 &plusmn; 0.008</td>'
                           "<td>GRU float32 of the stream</td></tr></table>", None),
}


@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_checks_layout(browser, handmade_site, case):
    """A table or text the reader cannot get at fails; the same thing in a scrolling box passes."""
    body, needle = LAYOUT_CASES[case]
    (handmade_site.root / f"layout-{case}.html").write_text(_layout_page(body), encoding="utf-8")
    browser.get(handmade_site.base + f"layout-{case}.html")
    _wait_loaded(browser)
    problems = layout_problems(browser)
    if needle is None:
        assert problems == [], problems
    else:
        assert any(needle in p for p in problems), f"{needle!r} not reported; got {problems}"


def test_book_css_keeps_every_table_readable(browser, handmade_site):
    """With book/_static/nnbook.css, a wide table of each kind scrolls in a box, its numbers and words whole."""
    shutil.copy(ROOT / "book" / "_static" / "nnbook.css", handmade_site.root / "nnbook.css")
    head = ("<tr><th>model</th>" + "".join(f"<th>parameters of layer {i}</th>" for i in range(10)) + "</tr>")
    row = ('<tr><td>GRU float32 on the stream</td>' + '<td class="nnbook-num">0.910 &plusmn; 0.008</td>' * 5
           + '<td class="text-right nnbook-num"><p>1,050,880</p></td>' * 5 + "</tr>")
    table = f"{head}{row}</table>"
    body = (f'<div class="pst-scrollable-table-container"><table class="table">{table}</div>'  # a Markdown table
            f'<div class="cell_output"><div class="output text_html"><table class="nnbook-table">{table}</div></div>'
            f"<table>{table}")  # raw HTML in a page: the table itself scrolls
    page = _layout_page(body).replace("</title>", '</title><link rel="stylesheet" href="nnbook.css">')
    page = page.replace("td,th{padding:2px 6px}", "td,th{padding:2px 6px;font-family:'DejaVu Sans',sans-serif}"
                        ".pst-scrollable-table-container{overflow-x:auto}")  # the theme's rule
    (handmade_site.root / "book-css.html").write_text(page, encoding="utf-8")
    browser.get(handmade_site.base + "book-css.html")
    _wait_loaded(browser)
    assert layout_problems(browser) == []
    widths = browser.execute_script("return [...document.querySelectorAll('table')].map(t => t.scrollWidth)")
    assert min(widths) > 640, f"the tables should be wider than the 600 px column to test anything: {widths}"


def test_numeric_cells_are_marked():
    """The Sphinx extension marks number cells td.nnbook-num (and nothing else), as the CSS expects."""
    assert all(map(nnbook_sphinx.is_number, ["410", "1,050,880", "0.910 ± 0.008", "20 / 20", "851.3 x", "≥ 100 x",
                                             "0.1033 – 0.126", "-30", "−0.5", "12.5%", "98.0 %", "3.2e-05"]))
    assert not any(map(nnbook_sphinx.is_number, ["", "—", "MLP", "GRU float32", "12 KB", "p50 ≤ 1 ms", "x", "± 0.1 dB"]))
    html = ('<td class="data row0 col1" >15,210</td><td><p>MLP</p></td><td class="text-right"><p>0.910 &#177; 0.008</p>'
            '</td><td>4</td><td class="nnbook-num">5</td>')
    assert nnbook_sphinx.mark_numeric_cells(html) == (
        '<td class="data row0 col1 nnbook-num" >15,210</td><td><p>MLP</p></td><td class="text-right nnbook-num"><p>0.910 '
        '&#177; 0.008</p></td><td class="nnbook-num">4</td><td class="nnbook-num">5</td>')


def test_font_set_is_in_effect(browser, font_set):
    """Chromium sees the set's families and no other (FONTCONFIG_FILE reaches it through chromedriver)."""
    assert font_problems(browser, font_set[0]) == []


def test_font_sets_skip_or_fail(monkeypatch, tmp_path):
    """A set without its fonts skips; NNBOOK_FONT_SET's set fails instead under CI; an installed one gets its file."""
    monkeypatch.setattr(fontsets, "missing", lambda name: f"font set {name!r} needs fonts-x" if name == "wide" else None)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(sys.modules[__name__], "REQUIRED_FONT_SET", "dejavu")
    with pytest.raises(pytest.skip.Exception, match="only NNBOOK_FONT_SET='dejavu' must run"):
        font_set_conf("wide", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "REQUIRED_FONT_SET", "wide")
    with pytest.raises(pytest.fail.Exception, match="needs fonts-x; it is NNBOOK_FONT_SET's"):
        font_set_conf("wide", tmp_path)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="so it must run"):
        font_set_conf("wide", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "REQUIRED_FONT_SET", "nope")
    with pytest.raises(pytest.fail.Exception, match="not a font set"):
        font_set_conf("dejavu", tmp_path)


def test_fonts_conf_lists_only_the_set(tmp_path):
    """The fontconfig file of a set names its font folders and no others (nor the per-user/local rules)."""
    text = fontsets.fonts_conf("dejavu", tmp_path / "cache")
    dirs = re.findall(r"<dir>([^<]+)</dir>", text)
    assert all(Path(d).name == "dejavu" for d in dirs), dirs
    assert f"<cachedir>{tmp_path / 'cache'}</cachedir>" in text
    assert "50-user.conf" not in text and "51-local.conf" not in text
    assert fontsets.packages("wide") == ["fonts-dejavu-core", "fonts-liberation", "fonts-noto-core"]
    with pytest.raises(ValueError, match="unknown font set"):
        fontsets.missing("comic")


def test_figure_legibility_arithmetic(tmp_path):
    """A 12-inch figure squeezed into 676 px has 10-pt labels of 7.8 px; a 6.4-inch one is fine."""
    site = type("S", (), {"base": "http://x/", "root": tmp_path})()
    png = bytearray(DOT_PNG)
    phys = b"pHYs" + struct.pack(">IIB", 5906, 5906, 1)  # 150 dpi
    chunk = struct.pack(">I", 9) + phys + struct.pack(">I", 0)
    (tmp_path / "f.png").write_bytes(bytes(png[:33]) + chunk + bytes(png[33:]))
    assert abs(png_dpi(tmp_path / "f.png") - 150) < 0.1
    wide = [{"src": "http://x/f.png", "natural": 1800, "shown": 676}]
    narrow = [{"src": "http://x/f.png", "natural": 960, "shown": 676}]
    assert any("labels are 7.8 px" in p for p in figure_problems(wide, site, 10)), figure_problems(wide, site, 10)
    assert figure_problems(narrow, site, 10) == []
