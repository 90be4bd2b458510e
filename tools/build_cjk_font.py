"""The book's Chinese font: a subset of Noto Sans CJK SC with exactly the CJK characters the book uses.

A fresh Debian machine has DejaVu fonts only, and DejaVu has no Chinese glyphs: without a font of its
own, every Chinese character of the book (the glossary's 中文 column, the "Glossary (English ↔ 中文)"
entry of the sidebar) shows as an empty box there. This tool writes

* ``book/_static/fonts/nnbook-cjk.woff2``: Noto Sans CJK SC Regular (SIL Open Font License 1.1),
  subset to every CJK character (CJK radicals, symbols and punctuation, kana, Unified Ideographs with
  extension A, compatibility ideographs, full- and half-width forms) found in the book's sources,
  plus a few common Chinese punctuation marks, renamed "nnbook CJK" (a Modified Version under the
  OFL), without the per-region ``locl`` forms (only the simplified-Chinese ones are kept);
* ``book/_static/fonts/OFL.txt``: the font's copyright notices and licence, copied from the Debian
  package's ``copyright`` file (the OFL requires them with every copy).

With the book as it stands (the glossary's 353 characters; 378 with the punctuation), the subset holds
403 glyphs (GSUB's vertical forms included) in 68 KB (69,676 bytes). ``book/_static/nnbook.css``
declares it as ``@font-face "nnbook CJK"`` with a ``unicode-range`` of the CJK ranges below, at the end
of the body's and the headings' font stacks and in the ``:lang(zh)`` stack, so the browser fetches it
only for a page with CJK text and uses it for CJK glyphs only: Latin text keeps the theme's fonts.
Sphinx copies ``book/_static/fonts/`` (``html_static_path``) into ``_build/html/_static/fonts/``.

The sources read: ``book/*.md``, ``book/*.bib``, ``_toc.yml``, ``_config.yml``, and every cell of
``chapters/*.ipynb`` (markdown and code sources, and the text, HTML, Markdown and LaTeX of the stored
outputs).

Usage::

    python tools/build_cjk_font.py            # rebuild the subset (needs Debian's fonts-noto-cjk)
    python tools/build_cjk_font.py --check    # exit 1 when the book uses a CJK character the subset lacks

``--check`` (for ``.ci/run``'s static checks; ``tests/test_cjk_font.py`` runs it too) needs only the
shipped subset, not the source font. Rebuilding needs the source font::

    apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk

(or ``--source FILE`` with a ``.ttc``/``.otf`` holding Noto Sans CJK SC). fontTools (installed with
matplotlib) reads and writes WOFF2 through the ``brotli`` package (``requirements.txt``). The output is
written atomically and is the same bytes on every run with the same inputs (no timestamp is updated).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FONT_DIR = ROOT / "book" / "_static" / "fonts"
FONT_NAME = "nnbook-cjk.woff2"
LICENCE_NAME = "OFL.txt"
FAMILY = "nnbook CJK"
POSTSCRIPT_NAME = "nnbookCJK-Regular"

#: the code point ranges counted as CJK (the same as book/_ext/nnbook_sphinx.py's CJK, which marks such
#: text lang="zh"); book/_static/nnbook.css gives the font this unicode-range
CJK_RANGES = (
    (0x2E80, 0x2FDF),  # CJK radicals supplement, Kangxi radicals
    (0x3000, 0x303F),  # CJK symbols and punctuation (、。「」《》 ...)
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK Unified Ideographs extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # half-width and full-width forms (，（）： ...)
)
#: always in the subset: the common Chinese punctuation, so a new sentence seldom needs a rebuild
EXTRA = "\u3000、。〈〉《》「」『』【】〔〕〜・！（），．：；？［］～"

#: where to look for the source font (Debian's fonts-noto-cjk; other distributions' names as well)
SOURCE_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
)
SOURCE_FAMILY = "Noto Sans CJK SC"
DEBIAN_PACKAGE = "fonts-noto-cjk"
DEBIAN_COPYRIGHT = Path("/usr/share/doc") / DEBIAN_PACKAGE / "copyright"
#: name records kept in the subset: copyright, names, version, trademark, vendor, designer, URLs, licence
NAME_IDS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)

CJK_CLASS = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in CJK_RANGES)
CJK_RE = re.compile(f"[{CJK_CLASS}]")


def is_cjk(ch: str) -> bool:
    """Whether character ``ch`` lies in one of :data:`CJK_RANGES`.

    >>> [is_cjk(c) for c in "中（a↔、"]
    [True, True, False, False, True]
    """
    return any(lo <= ord(ch) <= hi for lo, hi in CJK_RANGES)


def unicode_range() -> str:
    """The CSS ``unicode-range`` value of :data:`CJK_RANGES` (book/_static/nnbook.css must use it)."""
    return ", ".join(f"U+{lo:04X}-{hi:04X}" for lo, hi in CJK_RANGES)


def book_sources(root: Path = ROOT) -> list[Path]:
    """The files whose text the book shows: book/*.md and *.bib, _toc.yml, _config.yml, chapters/*.ipynb."""
    root = Path(root)
    files = sorted((root / "book").glob("*.md")) + sorted((root / "book").glob("*.bib"))
    files += [p for p in (root / "_toc.yml", root / "_config.yml") if p.is_file()]
    return files + sorted((root / "chapters").glob("*.ipynb"))


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def notebook_texts(path: Path) -> list[str]:
    """Every cell's source and the text of its stored outputs (plain text, HTML, Markdown, LaTeX, streams)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    texts = []
    for cell in nb.get("cells", []):
        texts.append(_joined(cell.get("source")))
        for out in cell.get("outputs", []):
            if "text" in out:  # a stream
                texts.append(_joined(out["text"]))
            for mime, value in (out.get("data") or {}).items():
                if mime.startswith("text/") or mime == "application/javascript":
                    texts.append(_joined(value))
            if out.get("output_type") == "error":
                texts.append(" ".join([str(out.get("evalue", ""))] + list(out.get("traceback", []))))
    return texts


def used_characters(root: Path = ROOT) -> dict[str, list[str]]:
    """Each CJK character the book's sources use -> the files (relative to ``root``) it appears in."""
    root = Path(root)
    found: dict[str, list[str]] = {}
    for path in book_sources(root):
        texts = notebook_texts(path) if path.suffix == ".ipynb" else [path.read_text(encoding="utf-8")]
        rel = path.relative_to(root).as_posix()
        for ch in sorted(set(CJK_RE.findall("\n".join(texts)))):
            found.setdefault(ch, []).append(rel)
    return found


def font_characters(path: Path) -> set[str]:
    """The characters a font file maps to a glyph (its best cmap)."""
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(str(path), lazy=True)
        cmap = font.getBestCmap() or {}
    except ImportError as e:  # WOFF2 needs brotli
        raise RuntimeError(f"reading {path.name} needs the brotli package (pip install -r requirements.txt): {e}")
    return {chr(cp) for cp in cmap}


def missing_characters(root: Path = ROOT, font_path: Path | None = None) -> dict[str, list[str]]:
    """The CJK characters the book uses that the shipped subset lacks -> the files using them (empty: fine)."""
    font_path = Path(font_path) if font_path is not None else FONT_DIR / FONT_NAME
    have = font_characters(font_path) if font_path.is_file() else set()
    return {ch: files for ch, files in used_characters(root).items() if ch not in have}


def wanted_characters(root: Path = ROOT) -> str:
    """What the subset must hold: the book's CJK characters and :data:`EXTRA`, sorted."""
    return "".join(sorted(set(used_characters(root)) | set(EXTRA)))


# --------------------------------------------------------------------------- building


def find_source_font(explicit: str | None = None) -> tuple[Path, int]:
    """``(file, face index)`` of Noto Sans CJK SC Regular, picked by its name (a .ttc holds 10 faces)."""
    from fontTools.ttLib import TTCollection, TTFont

    candidates = [Path(explicit)] if explicit else [Path(p) for p in SOURCE_CANDIDATES]
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix.lower() == ".ttc":
            faces = TTCollection(str(path), lazy=True).fonts
        else:
            faces = [TTFont(str(path), lazy=True)]
        for i, face in enumerate(faces):
            name = face["name"]
            family = name.getDebugName(16) or name.getDebugName(1)
            style = name.getDebugName(17) or name.getDebugName(2)
            if family == SOURCE_FAMILY and style == "Regular":
                return path, i
        if explicit:
            raise FileNotFoundError(f"{path} holds no face named {SOURCE_FAMILY!r} Regular")
    raise FileNotFoundError(
        f"{SOURCE_FAMILY} Regular not found (looked for {', '.join(SOURCE_CANDIDATES)}): "
        f"apt-get update && apt-get install -y --no-install-recommends {DEBIAN_PACKAGE}, or pass --source FILE")


def _rename(font, source_version: str) -> None:
    """Name the subset "nnbook CJK" (it is a Modified Version under the OFL), keeping the attribution."""
    names = {1: FAMILY, 2: "Regular", 4: f"{FAMILY} Regular", 6: POSTSCRIPT_NAME,
             3: f"{source_version};{POSTSCRIPT_NAME};subset of NotoSansCJKsc-Regular by tools/build_cjk_font.py",
             16: FAMILY, 17: "Regular"}
    table = font["name"]
    for rec in list(table.names):
        if rec.nameID in names:
            table.setName(names[rec.nameID], rec.nameID, rec.platformID, rec.platEncID, rec.langID)
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [POSTSCRIPT_NAME]
        top = cff.topDictIndex[0]
        top.FullName, top.FamilyName = f"{FAMILY} Regular", FAMILY


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (an unchanged file is left alone)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def licence_text(font, copyright_file: Path = DEBIAN_COPYRIGHT) -> str:
    """OFL.txt: what was made from what, the copyright notices, and the SIL OFL 1.1 from Debian's copyright file."""
    text = Path(copyright_file).read_text(encoding="utf-8")
    paragraphs = re.split(r"\n\s*\n", text)
    body = next((p for p in paragraphs if re.match(r"License: SIL-1\.1\s*\n", p)), None)
    files_all = next((p for p in paragraphs if re.match(r"Files: \*\s*\n", p)), "")
    if body is None:
        raise ValueError(f"{copyright_file}: no 'License: SIL-1.1' paragraph")
    lines = []
    for line in body.splitlines()[1:]:  # DEP-5: one space of indent, "." for an empty line
        line = line[1:] if line.startswith(" ") else line
        lines.append("" if line == "." else line)
    notices = [font["name"].getDebugName(0) or ""]
    notices += [m.strip() for m in re.findall(r"^Copyright:\s*(.+)$", files_all, re.M)]
    version = ""
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", DEBIAN_PACKAGE], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    package = f"Debian package {DEBIAN_PACKAGE}" + (f" {version}" if version else "")
    head = [
        f"{FONT_NAME} (font family \"{FAMILY}\") is a subset of Noto Sans CJK SC Regular",
        f"({font['name'].getDebugName(5) or 'version unknown'}; from the {package}),",
        "made by tools/build_cjk_font.py of the nnbook repository: only the glyphs of the CJK characters",
        "the book uses are kept, and the font is renamed. It is a Modified Version of the Font Software",
        "below and is distributed under the same licence, the SIL Open Font License, Version 1.1.",
        "",
        "Copyright notices of the Font Software (Noto Sans CJK; source https://github.com/googlefonts/noto-cjk):",
        *[f"  {n}" for n in notices if n],
        "",
        f"The licence, as the {DEBIAN_PACKAGE} package's copyright file states it",
        f"({copyright_file}):",
        "",
    ]
    return "\n".join(head + lines).rstrip() + "\n"


def build(source: str | None = None, out_dir: Path = FONT_DIR, root: Path = ROOT) -> tuple[Path, int]:
    """Write the subset and OFL.txt into ``out_dir``; return ``(font path, glyph count)``."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    path, index = find_source_font(source)
    font = TTFont(str(path), fontNumber=index, lazy=False, recalcTimestamp=False)
    version = font["name"].getDebugName(5) or ""
    licence = licence_text(font)
    opts = subset.Options()
    opts.flavor = "woff2"
    opts.layout_features = [f for f in opts.layout_features if f != "locl"]  # simplified Chinese forms only
    opts.name_IDs = list(NAME_IDS)
    opts.name_languages = ["*"]
    opts.notdef_outline = True
    opts.recalc_timestamp = False
    sub = subset.Subsetter(options=opts)
    sub.populate(text=wanted_characters(root))
    sub.subset(font)
    _rename(font, version.replace("Version ", "").split(";")[0])
    font.recalcTimestamp = False
    font.flavor = "woff2"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / FONT_NAME
        font.save(str(out))
        data = out.read_bytes()
    glyphs = len(font.getGlyphOrder())
    out_dir = Path(out_dir)
    _atomic_write(out_dir / FONT_NAME, data)
    _atomic_write(out_dir / LICENCE_NAME, licence.encode("utf-8"))
    return out_dir / FONT_NAME, glyphs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when the book uses a CJK character the shipped subset lacks (builds nothing)")
    ap.add_argument("--source", help="the font file holding Noto Sans CJK SC Regular (default: Debian's)")
    ap.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)  # another book's sources (tests)
    args = ap.parse_args(argv)
    root = Path(args.root)
    font_path = FONT_DIR / FONT_NAME
    if args.check:
        problems = []
        if not font_path.is_file():
            problems.append(f"{font_path.relative_to(ROOT)} is missing")
        if not (FONT_DIR / LICENCE_NAME).is_file():
            problems.append(f"{(FONT_DIR / LICENCE_NAME).relative_to(ROOT)} (the font's licence) is missing")
        try:
            missing = missing_characters(root, font_path) if font_path.is_file() else {}
        except RuntimeError as e:
            print(f"build_cjk_font.py: {e}", file=sys.stderr)
            return 1
        if missing:
            shown = ", ".join(f"{ch} (U+{ord(ch):04X}, in {', '.join(files)})" for ch, files in list(missing.items())[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            problems.append(f"{len(missing)} CJK character(s) the book uses are not in {FONT_NAME}: {shown}{more}")
        if problems:
            for p in problems:
                print(f"build_cjk_font.py --check: {p}", file=sys.stderr)
            print("rebuild it: apt-get install -y --no-install-recommends fonts-noto-cjk && "
                  "python tools/build_cjk_font.py, then commit book/_static/fonts/", file=sys.stderr)
            return 1
        used = used_characters(root)
        print(f"{FONT_NAME}: all {len(used)} CJK characters of the book are in the subset "
              f"({font_path.stat().st_size:,} bytes)")
        return 0
    try:
        out, glyphs = build(args.source, root=root)
    except (FileNotFoundError, ValueError) as e:
        print(f"build_cjk_font.py: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: {glyphs} glyphs, "
          f"{out.stat().st_size:,} bytes ({len(used_characters(root))} CJK characters of the book + "
          f"{len(EXTRA)} punctuation marks), and {LICENCE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
