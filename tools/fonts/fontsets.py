"""Font sets for the browser test: which fonts Chromium may use, through a private fontconfig file.

A page's layout depends on the fonts the machine has: the theme asks for ``Arial``/``Helvetica``,
which fontconfig maps to Liberation Sans where it is installed and to the much wider DejaVu Sans on
a fresh Debian machine. ``tests/test_browser.py`` therefore checks the book under named font sets,
each a list of font folders:

* ``dejavu``: DejaVu only (what a fresh Debian has; the widest text, so the hardest set);
* ``wide``: DejaVu plus Liberation (the metric twins of Arial, Times and Courier) and Noto.

:func:`write_fonts_conf` writes a ``fonts.conf`` whose only ``<dir>`` entries are the set's folders
(the system's rules in ``/etc/fonts/conf.d`` are kept, except the per-user and local files, which
could add folders) with a cache folder next to it; start Chromium with ``FONTCONFIG_FILE`` pointing at
it and it sees that set and nothing else.

Command line (used by ``tools/ci_browser.sh``)::

    python tools/fonts/fontsets.py packages dejavu    # the Debian packages the set needs
    python tools/fonts/fontsets.py check dejavu       # exit 1, with the reason, when they are missing
    python tools/fonts/fontsets.py conf dejavu DIR    # write DIR/fonts.conf and print its path

For instance, a screenshot under DejaVu only::

    FONTCONFIG_FILE=$(python tools/fonts/fontsets.py conf dejavu /tmp/fc-dejavu) chromium --headless ...
"""
from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

#: where Debian (and most distributions) install fonts
FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
#: family folder name -> the Debian package that installs it
PACKAGES = {"dejavu": "fonts-dejavu-core", "liberation": "fonts-liberation", "noto": "fonts-noto-core"}
#: family folder name -> a font family it holds (the browser test measures it to see which fonts Chromium has)
FAMILIES = {"dejavu": "DejaVu Sans", "liberation": "Liberation Sans", "noto": "Noto Sans"}
#: set name -> the family folders it consists of
FONT_SETS = {
    "dejavu": ("dejavu",),
    "wide": ("dejavu", "liberation", "noto"),
}
DEFAULT_SET = "dejavu"
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb")
#: files of /etc/fonts/conf.d that may add font folders (a user's ~/.fonts, /etc/fonts/local.conf)
SKIPPED_RULES = ("50-user.conf", "51-local.conf")


def _check_name(name: str) -> None:
    if name not in FONT_SETS:
        raise ValueError(f"unknown font set {name!r}; known: {', '.join(FONT_SETS)}")


def family_dirs(family: str) -> list[Path]:
    """The installed folders of a font family (``/usr/share/fonts/truetype/dejavu``, ...) that hold fonts."""
    found = []
    for root in FONT_ROOTS:
        if not root.is_dir():
            continue
        for d in sorted(root.glob(f"*/{family}")) + sorted(root.glob(family)):
            if d.is_dir() and any(p.suffix.lower() in FONT_SUFFIXES for p in d.rglob("*")):
                found.append(d)
    return found


def packages(name: str) -> list[str]:
    """The Debian packages that install font set ``name``."""
    _check_name(name)
    return [PACKAGES[f] for f in FONT_SETS[name]]


def missing(name: str) -> str | None:
    """Why font set ``name`` cannot be used here (which packages to install), or None when it can."""
    _check_name(name)
    absent = [f for f in FONT_SETS[name] if not family_dirs(f)]
    if not absent:
        return None
    pkgs = " ".join(PACKAGES[f] for f in absent)
    return (f"font set {name!r} needs the {', '.join(absent)} fonts, not installed here "
            f"(apt-get install -y --no-install-recommends {pkgs})")


def fonts_conf(name: str, cache_dir: Path) -> str:
    """The text of a fonts.conf that lets fontconfig see font set ``name`` only."""
    _check_name(name)
    dirs = [d for f in FONT_SETS[name] for d in family_dirs(f)]
    rules = sorted(p for p in Path("/etc/fonts/conf.d").glob("*.conf") if p.name not in SKIPPED_RULES)
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">',
             f"<!-- font set {name!r}, written by tools/fonts/fontsets.py -->", "<fontconfig>"]
    lines += [f"  <dir>{escape(str(d))}</dir>" for d in dirs]
    lines.append(f"  <cachedir>{escape(str(cache_dir))}</cachedir>")
    lines += [f'  <include ignore_missing="yes">{escape(str(p))}</include>' for p in rules]
    lines.append("</fontconfig>")
    return "\n".join(lines) + "\n"


def write_fonts_conf(name: str, folder: Path) -> Path:
    """Write ``folder/fonts.conf`` (and make ``folder/cache``) for font set ``name``; return the file's path.

    Raises:
        ValueError: ``name`` is not a known set.
        FileNotFoundError: the set's fonts are not installed (the message names the packages).
    """
    reason = missing(name)
    if reason:
        raise FileNotFoundError(reason)
    folder = Path(folder).resolve()
    (folder / "cache").mkdir(parents=True, exist_ok=True)
    path = folder / "fonts.conf"
    path.write_text(fonts_conf(name, folder / "cache"), encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("packages", "check", "conf") or (argv[0] == "conf" and len(argv) != 3):
        usage = __doc__.split("tools/ci_browser.sh``)::")[1].split("For instance")[0]
        print("usage:\n" + usage.strip("\n").rstrip(), file=sys.stderr)
        return 2
    try:
        if argv[0] == "packages":
            print(" ".join(packages(argv[1])))
        elif argv[0] == "check":
            reason = missing(argv[1])
            print(reason or f"font set {argv[1]!r}: " + ", ".join(
                str(d) for f in FONT_SETS[argv[1]] for d in family_dirs(f)), file=sys.stderr if reason else sys.stdout)
            return 1 if reason else 0
        else:
            print(write_fonts_conf(argv[1], Path(argv[2])))
    except (ValueError, FileNotFoundError) as e:
        print(f"fontsets.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
