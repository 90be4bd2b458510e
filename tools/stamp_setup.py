#!/usr/bin/env python3
"""Stamp the setup cell of every chapter notebook from one template.

The setup cell is the code cell tagged ``nnbook-setup`` (the first code cell of a
chapter).  Its text is generated here from two single sources of truth:

* the repository address, ``repository.url`` in ``_config.yml`` (also what the Colab
  and Binder launch buttons use), from which a reader without ``nnbook`` installs it;
* the version of the ``nnbook`` package (``nnbook/__init__.py``): the cell installs the release
  tagged ``v{version}`` (the code the chapter was executed with, not whatever ``main`` is today)
  and checks it, so a notebook warns, saying what to do, when it runs against another ``nnbook``.

Usage:  python tools/stamp_setup.py [--check] [NOTEBOOK ...]   (default: chapters/*.ipynb)
With ``--check`` nothing is written; the exit status is 1 when a notebook is out of date.
A stamped notebook whose setup cell changed must be re-executed (tools/execute.py).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "nnbook-setup"

TEMPLATE = '''\
# Setup (stamped by tools/stamp_setup.py from _config.yml and nnbook's version: edit the template there)
import importlib.util, subprocess, sys
if importlib.util.find_spec("nnbook") is None:  # e.g. on Colab: install the release this chapter was run with
    _pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{requirement}"],
                          capture_output=True, text=True)
    if _pip.returncode != 0:  # one plain sentence instead of pip's traceback
        _why = (_pip.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"Could not install nnbook {version} ({{_why}}). Install it by hand with "
                         "pip install '{requirement}', or clone {url}, check out the tag v{version}, "
                         "run `pip install -r requirements.txt` there and open the chapter in that clone.")
# import os; os.environ["NNBOOK_CACHE"] = "off"  # uncomment to retrain every cached model instead of loading it
import nnbook
nnbook.check_version("{version}", "{url}")  # warns, saying what to do, when another nnbook is installed
SEED = nnbook.seed_everything(0)  # change the seed here: every claim below must still hold
device = nnbook.device()  # CUDA, then Apple MPS, then CPU; NNBOOK_DEVICE=cpu overrides
nnbook.plot.use_style()'''


class StampError(RuntimeError):
    """The configuration or the package version cannot be read."""


def repository_url(config_path: Path = ROOT / "_config.yml") -> str:
    """``repository.url`` of the book's ``_config.yml`` (the one place the address is written)."""
    import yaml

    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    url = (config.get("repository") or {}).get("url")
    if not isinstance(url, str) or not url:
        raise StampError(f"{config_path} has no repository.url")
    return url


def nnbook_version(init_path: Path = ROOT / "nnbook" / "__init__.py") -> str:
    """``__version__`` of the ``nnbook`` package, read from its source (no import)."""
    text = init_path.read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise StampError(f"{init_path} has no __version__")
    return m.group(1)


def requirement(url: str, version: str) -> str:
    """What the setup cell asks pip for: the book extra of the release tagged ``v{version}`` at ``url``.

    ``tools/colab_rehearsal.py`` installs the same string with a ``file://`` address of a clone.
    """
    return f"nnbook[book] @ git+{url}@v{version}"


def setup_source(url: str | None = None, version: str | None = None) -> str:
    """The setup cell's text, for ``url`` (default: ``_config.yml``'s) and ``version`` (default: nnbook's)."""
    url = url or repository_url()
    version = version or nnbook_version()
    return TEMPLATE.format(url=url, version=version, requirement=requirement(url, version))


def stamp_cells(nb: dict, source: str | None = None) -> bool:
    """Stamp the setup cell of a notebook held in memory (nbformat dict); True when it changed.

    The setup cell is tagged ``nnbook-setup`` (and ``hide-input``, so the rendered page
    shows a collapsed cell). Raises ``ValueError`` when the notebook has no code cell.
    """
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = [c for c in cells if TAG in c.get("metadata", {}).get("tags", [])]
    if not setup:
        if not cells:
            raise ValueError("the notebook has no code cell to use as its setup cell")
        setup = [cells[0]]
        setup[0].setdefault("metadata", {}).setdefault("tags", []).append(TAG)
    tags = setup[0].setdefault("metadata", {}).setdefault("tags", [])
    changed = False
    if "hide-input" not in tags:
        tags.append("hide-input")
        changed = True
    src = source if source is not None else setup_source()
    old = setup[0]["source"]
    old = "".join(old) if isinstance(old, list) else old
    setup[0]["source"] = src
    return changed or old != src


def stamp(path: Path, check: bool) -> bool:
    """Stamp a notebook file; return True when it was (or, with check, would be) changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = stamp_cells(nb)
    if changed and not check:
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a notebook is out of date")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    try:
        stale = [p for p in paths if stamp(p, args.check)]
    except (StampError, ValueError) as exc:
        print(f"stamp_setup: {exc}", file=sys.stderr)
        return 2
    for p in stale:
        print(f"{'out of date' if args.check else 'stamped'}: {p}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
