#!/usr/bin/env python3
"""Stamp, then execute chapter notebooks top to bottom and store their outputs.

Usage::

    python tools/execute.py [NOTEBOOK ...]              # default: every chapter; saves on success
    python tools/execute.py --seed 123456 NOTEBOOK      # another seed; nothing is saved
    python tools/execute.py --budget 60 chapters/*.ipynb  # exit 1 when a notebook takes longer
    python tools/execute.py --no-save --fresh-cache --budget 90   # what .ci/run checks

Each notebook runs in a fresh kernel of the *current* Python environment (the
project's own virtual environment), with the chapter folder as working directory,
exactly as ``pytest --nbval`` will.  The executed notebook replaces the file only
when every cell succeeded (written atomically), so a failure never leaves a
half-executed notebook behind.

What is stored besides the outputs: ``metadata.nnbook`` of the notebook holds one
wall time (``wall_time_s``, seconds) and the date, versions and CPU it ran with
(the chapter pages show it as a run stamp).  No per-cell timing is written, so a
re-execution changes only what really changed.

While a notebook runs, ``NNBOOK_NOTEBOOK`` names it, so :func:`nnbook.claim` can
record which chapter a claim belongs to (see ``tools/seed_sweep.py``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import stamp_setup  # noqa: E402

TIMING_KEYS = ("execution",)  # per-cell timing written by older versions of this tool


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_stamp(seconds: float) -> dict:
    """The record stored in ``metadata.nnbook``: wall time, date, versions, hardware."""
    import torch

    import nnbook

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "wall_time_s": round(float(seconds), 1),
        "executed": _dt.date.today().isoformat(),
        "nnbook": nnbook.__version__,
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": cuda,
    }


def strip_cell_timing(nb) -> None:
    for cell in nb.cells:
        for key in TIMING_KEYS:
            cell.get("metadata", {}).pop(key, None)


def drop_widget_outputs(nb) -> None:
    """Interactive widgets are for readers running the notebook: the static book cannot show them.
    Cells tagged ``remove-output`` (an ipywidgets explorer) keep no stored output, and no widget
    state is stored; such cells are also tagged ``nbval-ignore-output``."""
    for cell in nb.cells:
        if "remove-output" in cell.get("metadata", {}).get("tags", []):
            cell["outputs"] = []
    nb.metadata.pop("widgets", None)


def execute(path: Path, timeout: int = 600, write: bool = True) -> float:
    """Execute one notebook; return its wall time in seconds. Raises on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    stamp_setup.stamp_cells(nb)  # the setup cell always runs as stamped (saved only when write is true)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
    os.environ["NNBOOK_PROGRESS"] = "off"  # no progress widgets in stored outputs (nnbook.utils.progress_bar)
    os.environ["NNBOOK_NOTEBOOK"] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    if not write:
        return seconds
    strip_cell_timing(nb)
    drop_widget_outputs(nb)
    nb.metadata["nnbook"] = run_stamp(seconds)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; a notebook is an ordinary readable file
    os.replace(tmp, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute chapter notebooks and store their outputs.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    parser.add_argument("--seed", type=int, help="run with NNBOOK_SEED=SEED and save nothing")
    parser.add_argument("--budget", type=float, help="seconds; exit 1 when a notebook takes longer")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--no-save", action="store_true", help="execute but do not write the notebooks back")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="give each notebook its own empty NNBOOK_CACHE (how the budget is checked)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        if args.seed < 0:
            parser.error(f"--seed must be >= 0, got {args.seed}")
        os.environ["NNBOOK_SEED"] = str(args.seed)
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    over = []
    for p in paths:
        if args.fresh_cache:
            os.environ["NNBOOK_CACHE"] = tempfile.mkdtemp(prefix="nnbook-cache-")
        s = execute(p, timeout=args.timeout, write=args.seed is None and not args.no_save)
        flag = ""
        if args.budget is not None and s > args.budget:
            over.append(p)
            flag = f"   <-- over the {args.budget:g} s budget"
        seed = f" with NNBOOK_SEED={args.seed}" if args.seed is not None else ""
        seed += " (not saved)" if (args.seed is not None or args.no_save) else ""
        seed += " from an empty cache" if args.fresh_cache else ""
        name = p.relative_to(ROOT) if p.is_relative_to(ROOT) else p
        print(f"{name}: executed{seed} in {s:.1f} s{flag}", flush=True)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
