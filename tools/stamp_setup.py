#!/usr/bin/env python3
"""Stamp the setup cell of every chapter notebook from one template.

The setup cell is the code cell tagged ``nnbook-setup`` (the first code cell of a
chapter).  Its text is generated here from two single sources of truth:

* the repository address, ``repository.url`` in ``_config.yml`` (also what the Colab
  and Binder launch buttons use), from which a reader without ``nnbook`` installs it;
* the version of the ``nnbook`` package (``nnbook/__init__.py``), which the cell
  checks so a notebook warns when it runs against a different ``nnbook``.

Usage:  python tools/stamp_setup.py [--check] [NOTEBOOK ...]   (default: chapters/*.ipynb)
With ``--check`` nothing is written; the exit status is 1 when a notebook is out of date.
A stamped notebook whose setup cell changed must be re-executed (tools/execute.py).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "nnbook-setup"

TEMPLATE = '''\
# Setup (stamped by tools/stamp_setup.py from _config.yml and nnbook's version: edit the template there)
import importlib.util, subprocess, sys
if importlib.util.find_spec("nnbook") is None:  # e.g. on Colab: install the book's helper package
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "nnbook @ git+{url}"])
import nnbook
nnbook.check_version("{version}")  # warns if nnbook differs from the version this notebook was run with
SEED = nnbook.seed_everything(0)  # change the seed here: every assert below must still hold
device = nnbook.device()  # CUDA, then Apple MPS, then CPU; NNBOOK_DEVICE=cpu overrides
nnbook.plot.use_style()'''


def repository_url() -> str:
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    m = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, re.M)
    if not m:
        sys.exit("stamp_setup: _config.yml has no repository.url")
    return m.group(1).strip("'\"")


def nnbook_version() -> str:
    text = (ROOT / "nnbook" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        sys.exit("stamp_setup: nnbook/__init__.py has no __version__")
    return m.group(1)


def setup_source() -> str:
    return TEMPLATE.format(url=repository_url(), version=nnbook_version())


def stamp_cells(nb: dict) -> bool:
    """Stamp the setup cell of a notebook held in memory (nbformat dict); True when it changed."""
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = [c for c in cells if TAG in c.get("metadata", {}).get("tags", [])]
    if not setup:
        if not cells:
            raise ValueError("the notebook has no code cell to use as its setup cell")
        setup = [cells[0]]
        setup[0].setdefault("metadata", {}).setdefault("tags", []).append(TAG)
    src = setup_source()
    old = setup[0]["source"]
    old = "".join(old) if isinstance(old, list) else old
    setup[0]["source"] = src
    return old != src


def stamp(path: Path, check: bool) -> bool:
    """Stamp a notebook file; return True when it was (or, with check, would be) changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = stamp_cells(nb)
    if changed and not check:
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "chapters").glob("*.ipynb"))
    stale = [p for p in paths if stamp(p, check)]
    for p in stale:
        print(f"{'out of date' if check else 'stamped'}: {p}")
    return 1 if (check and stale) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
