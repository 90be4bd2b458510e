#!/usr/bin/env python3
"""Stamp, then execute chapter notebooks top to bottom and store their outputs.

Usage:  python tools/execute.py [--seed N] chapters/01_neurons.ipynb [...]   (default: every chapter)

With ``--seed N`` the notebooks run with ``NNBOOK_SEED=N`` (which overrides the seed
in their setup cell, see ``nnbook.seed_everything``) and are *not* written back:
this is the check that every assert holds for other seeds too.

Runs each notebook in a fresh kernel of the *current* Python environment (the
project's own virtual environment), with the chapter folder as working directory,
exactly as ``pytest --nbval`` will.  The executed notebook replaces the file only
when every cell succeeded (written atomically), so a failure never leaves a
half-executed notebook behind.  Prints the wall time of each notebook; the budget
is 60 s on 2 CPU cores.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import stamp_setup  # noqa: E402


def execute(path: Path, timeout: int = 600, write: bool = True) -> float:
    nb = nbformat.read(path, as_version=4)
    stamp_setup.stamp_cells(nb)  # the setup cell always runs as stamped (saved only when write is true)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    if not write:
        return seconds
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; a notebook is an ordinary readable file
    os.replace(tmp, path)
    return seconds


def main(argv: list[str]) -> int:
    write = True
    if "--seed" in argv:
        i = argv.index("--seed")
        os.environ["NNBOOK_SEED"] = str(int(argv[i + 1]))
        argv = argv[:i] + argv[i + 2:]
        write = False
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "chapters").glob("*.ipynb"))
    for p in paths:
        s = execute(p, write=write)
        flag = "" if s <= 60 else "   <-- over the 60 s budget"
        seed = f" with NNBOOK_SEED={os.environ['NNBOOK_SEED']} (not saved)" if not write else ""
        print(f"{p.relative_to(ROOT)}: executed{seed} in {s:.1f} s{flag}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
