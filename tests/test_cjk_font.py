"""The book's Chinese font (``book/_static/fonts/nnbook-cjk.woff2``, built by ``tools/build_cjk_font.py``).

A fresh Debian machine has DejaVu fonts only, without a single Chinese glyph, so the book ships a subset
of Noto Sans CJK SC with exactly the CJK characters it uses. These tests check that

* the subset holds every CJK character of the book's sources (a new Chinese word in the glossary
  fails here, and in ``python tools/build_cjk_font.py --check``, until the font is rebuilt), and the
  collector reads every kind of source (Markdown, notebook cells and outputs, _toc.yml, _config.yml);
* the font is small, renamed, and shipped with its licence (``OFL.txt``);
* ``book/_static/nnbook.css`` declares it (``@font-face "nnbook CJK"`` with the tool's unicode-range)
  and puts it in the body's, the headings' and the ``:lang(zh)`` font stacks, and Sphinx copies it;
* in headless Chromium under the DejaVu-only font set (``tools/fonts/fontsets.py``), every CJK character
  of the built glossary page (the 中文 column, the title, the sidebar entry) is drawn with the subset,
  and Latin text is not (the browser reports the fonts it used for each element). Skipped where
  Chromium, chromedriver or selenium is missing, except under ``CI=true``, where it fails, as
  ``tests/test_browser.py`` does (whose helpers it uses).

Run:  ``pytest -q tests/test_cjk_font.py -p no:cacheprovider``  (a few seconds; the browser part uses
``_build/html`` when it is newer than the book's sources, else builds the book in a temporary folder).
"""
from __future__ import annotations

import doctest
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_cjk_font as cjk  # noqa: E402  (tools/build_cjk_font.py)

from test_browser import (  # noqa: E402,F401  (book_html and browser_ready are fixtures used below)
    Site, _wait_loaded, book_html, browser_ready, font_set_conf, make_driver)

FONT = cjk.FONT_DIR / cjk.FONT_NAME
LICENCE = cjk.FONT_DIR / cjk.LICENCE_NAME
CSS = ROOT / "book" / "_static" / "nnbook.css"
MAX_BYTES = 300_000


def test_tool_doctests():
    assert doctest.testmod(cjk, verbose=False).failed == 0


def test_subset_covers_every_cjk_character_of_the_book():
    used = cjk.used_characters()
    assert {"中", "文"} <= set(used), "the collector did not find the glossary's 中文 (book/glossary.md)"
    missing = cjk.missing_characters()
    assert not missing, (
        f"{len(missing)} CJK character(s) the book uses are not in {FONT.relative_to(ROOT)}: "
        + ", ".join(f"{ch} (U+{ord(ch):04X}, {', '.join(files)})" for ch, files in list(missing.items())[:20])
        + "; rebuild it: apt-get install -y --no-install-recommends fonts-noto-cjk && python tools/build_cjk_font.py")
    assert cjk.main(["--check"]) == 0


def _fake_book(root: Path, extra: str = "") -> None:
    (root / "book").mkdir(parents=True)
    (root / "chapters").mkdir()
    (root / "book" / "terms.md").write_text(f"# Terms\n\n| pruning | 剪枝{extra} |\n", encoding="utf-8")
    (root / "_toc.yml").write_text("root: book/terms  # 目录\n", encoding="utf-8")
    (root / "_config.yml").write_text('title: "书"\n', encoding="utf-8")
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["量化", "（int8）"], "metadata": {}},
        {"cell_type": "code", "source": "print('蒸馏')", "metadata": {}, "execution_count": 1, "outputs": [
            {"output_type": "stream", "name": "stdout", "text": ["模型\n"]},
            {"output_type": "execute_result", "execution_count": 1, "metadata": {},
             "data": {"text/plain": "'网络'", "text/html": "<b>注意力</b>"}}]}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "chapters" / "01_x.ipynb").write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")


def test_collector_reads_every_kind_of_source(tmp_path):
    _fake_book(tmp_path)
    used = cjk.used_characters(tmp_path)
    assert set(used) == set("剪枝目录书量化（）蒸馏模型网络注意力"), sorted(used)
    assert used["剪"] == ["book/terms.md"] and used["目"] == ["_toc.yml"] and used["书"] == ["_config.yml"]
    assert used["模"] == ["chapters/01_x.ipynb"] and used["注"] == ["chapters/01_x.ipynb"]
    assert not any(c.isascii() for c in used)
    assert set(cjk.EXTRA) <= set(cjk.wanted_characters(tmp_path))


def test_check_fails_on_a_new_character(tmp_path, capsys):
    """A character the subset lacks (龘, U+9F98) makes --check exit 1 and name the character and its file."""
    _fake_book(tmp_path, extra="龘")
    assert "龘" in cjk.missing_characters(tmp_path)
    assert cjk.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "龘 (U+9F98, in book/terms.md)" in err and "build_cjk_font.py" in err


def test_subset_is_small_named_and_cjk_only():
    from fontTools.ttLib import TTFont

    assert FONT.is_file(), f"{FONT.relative_to(ROOT)} is missing: run python tools/build_cjk_font.py"
    size = FONT.stat().st_size
    assert size < MAX_BYTES, f"{FONT.name} is {size:,} bytes (> {MAX_BYTES:,}): is it a subset?"
    font = TTFont(str(FONT))
    assert font.flavor == "woff2"
    assert len(font.getGlyphOrder()) < 1000
    name = font["name"]
    assert name.getDebugName(1) == cjk.FAMILY and name.getDebugName(6) == cjk.POSTSCRIPT_NAME
    assert "Open Font License" in (name.getDebugName(13) or "") and "Adobe" in (name.getDebugName(0) or "")
    chars = cjk.font_characters(FONT)
    assert chars and all(cjk.is_cjk(c) for c in chars), sorted(c for c in chars if not cjk.is_cjk(c))
    assert set(cjk.EXTRA) <= chars


def test_licence_is_shipped():
    assert LICENCE.is_file(), f"{LICENCE.relative_to(ROOT)} is missing: the OFL requires it with every copy"
    text = LICENCE.read_text(encoding="utf-8")
    for needle in ("SIL OPEN FONT LICENSE Version 1.1", "PERMISSION & CONDITIONS", "DISCLAIMER",
                   "© 2014-2021 Adobe", cjk.FONT_NAME, "Noto Sans CJK SC"):
        assert needle in text, f"{needle!r} not in {LICENCE.name}"


def _rules(css: str) -> list[tuple[str, str]]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    return [(sel.strip(), body) for sel, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css)]


def test_css_declares_the_font_and_uses_it_for_cjk_only():
    rules = _rules(CSS.read_text(encoding="utf-8"))
    faces = [body for sel, body in rules if sel == "@font-face" and cjk.FAMILY in body]
    assert len(faces) == 1, f"book/_static/nnbook.css needs one @font-face for {cjk.FAMILY!r}"
    face = faces[0]
    url = re.search(r'src:\s*url\("([^"]+)"\)\s*format\("woff2"\)', face)
    assert url and (CSS.parent / url.group(1)).resolve() == FONT.resolve(), face
    declared = re.search(r"unicode-range:\s*([^;]+);", face)
    assert declared and re.sub(r"\s+", "", declared.group(1)) == re.sub(r"\s+", "", cjk.unicode_range()), (
        "the @font-face's unicode-range must be tools/build_cjk_font.py's CJK_RANGES: " + cjk.unicode_range())
    root = " ".join(body for sel, body in rules if sel == ":root")
    for var, system in (("base", "base-system"), ("heading", "base-system"), ("monospace", "monospace-system")):
        assert re.search(rf'--pst-font-family-{var}:\s*var\(--pst-font-family-{system}\),\s*"nnbook CJK"\s*;', root), (
            f"--pst-font-family-{var} must end with the theme's fonts, then \"nnbook CJK\"")
    zh = [body for sel, body in rules if sel == ":lang(zh)"]
    assert zh and cjk.FAMILY in zh[-1], "the last :lang(zh) rule must name the subset in its font-family"


def test_sphinx_copies_the_fonts():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert "book/_static" in cfg["sphinx"]["config"]["html_static_path"]
    built = ROOT / "_build" / "html" / "_static" / "fonts"
    info = ROOT / "_build" / "html" / ".buildinfo"
    if not info.is_file():
        pytest.skip("no build of the book in _build/html (jupyter-book build -W .)")
    stale = info.stat().st_mtime < max(FONT.stat().st_mtime, LICENCE.stat().st_mtime)
    for f in (FONT, LICENCE):
        copy = built / f.name
        if not (copy.is_file() and copy.read_bytes() == f.read_bytes()):
            if stale:
                pytest.skip("_build/html is older than book/_static/fonts/ (jupyter-book build -W .)")
            pytest.fail(f"_build/html/_static/fonts/{f.name} is missing or differs from {f.relative_to(ROOT)}")


# --------------------------------------------------------------------------- in a real browser

JS_MARK_CJK = r"""
// mark every element whose own text holds CJK characters; return how many each holds, and the font faces
const done = arguments[arguments.length - 1], cjk = new RegExp('[' + arguments[0] + ']', 'gu');
document.fonts.ready.then(() => {
  const counts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const own = new Map();
  while (walker.nextNode()) {
    const n = walker.currentNode, k = (n.nodeValue.match(cjk) || []).length;
    if (k && n.parentElement.closest('script, style, title') === null) own.set(n.parentElement, (own.get(n.parentElement) || 0) + k);
  }
  for (const [el, k] of own) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;  // not shown (a collapsed menu, a tooltip)
    el.setAttribute('data-nnbook-cjk', String(counts.length));
    counts.push({n: k, text: el.textContent.trim().slice(0, 40)});
  }
  done({counts: counts,
        check: document.fonts.check('16px "nnbook CJK"', '中文'),
        faces: [...document.fonts].filter(f => f.family.replace(/["']/g, '') === 'nnbook CJK').map(f => f.status)});
});
"""


def _platform_fonts(driver, selector: str) -> list[list[dict]]:
    """The fonts Chromium drew each element matching ``selector`` with (DevTools: CSS.getPlatformFontsForNode)."""
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    ids = driver.execute_cdp_cmd("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]
    return [driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": i})["fonts"] for i in ids]


@pytest.fixture(scope="module")
def dejavu_browser(tmp_path_factory, browser_ready):
    conf = font_set_conf("dejavu", tmp_path_factory.mktemp("fontconfig-cjk-dejavu"))
    driver = make_driver(tmp_path_factory.mktemp("chromium-profile-cjk"), conf)
    yield driver
    driver.quit()


def test_glossary_draws_chinese_with_the_subset(dejavu_browser, book_html):
    """Under DejaVu only, every CJK character of the glossary page comes from "nnbook CJK"; Latin does not."""
    site = Site(book_html)
    try:
        driver = dejavu_browser
        driver.get(site.base + "book/glossary.html")
        _wait_loaded(driver)
        facts = driver.execute_async_script(JS_MARK_CJK, cjk.CJK_CLASS)
        assert facts["faces"] == ["loaded"], f"the @font-face for nnbook CJK did not load: {facts['faces']}"
        assert facts["check"], 'document.fonts.check(\'16px "nnbook CJK"\', "中文") is false'
        counts = facts["counts"]
        assert len(counts) > 100, f"expected the glossary's 中文 column, found CJK text in {len(counts)} elements"
        fonts = _platform_fonts(driver, "[data-nnbook-cjk]")
        marked = driver.execute_script(
            "return [...document.querySelectorAll('[data-nnbook-cjk]')].map(e => +e.dataset.nnbookCjk)")
        assert len(fonts) == len(marked) == len(counts)
        problems = []
        for i, used in zip(marked, fonts):
            drawn = sum(f["glyphCount"] for f in used if f["familyName"] == cjk.FAMILY)
            if drawn < counts[i]["n"]:
                problems.append(f"{counts[i]['text']!r}: {counts[i]['n']} CJK character(s), {drawn} drawn with "
                                f"{cjk.FAMILY} (fonts used: {[(f['familyName'], f['glyphCount']) for f in used]})")
        assert not problems, f"{len(problems)} element(s) with CJK text not drawn with the subset:\n  " + \
            "\n  ".join(problems[:10])
        texts = " ".join(c["text"] for c in counts)
        assert "中文" in texts and "Glossary (English" in texts, "the title or the sidebar entry was not checked"
        latin = _platform_fonts(driver, "article.bd-article > section > p")
        assert latin and all(f["familyName"] != cjk.FAMILY for used in latin for f in used), latin
    finally:
        site.close()
