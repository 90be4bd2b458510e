#!/usr/bin/env python3
"""Rehearse the Colab path: Colab's Python and packages, nnbook installed as the setup cell does, every chapter run.

Usage::

    python tools/colab_rehearsal.py                    # every chapter of _toc.yml (what .ci/run does)
    python tools/colab_rehearsal.py --chapters 01_neurons 05c_quantization_weight_only
    python tools/colab_rehearsal.py --python /usr/bin/python3.13 --keep /tmp/rehearsal

What it does, in order (each step prints what it found; the log ends with one verdict line):

1. **A Python other than the project's own**: ``--python``, else ``$NNBOOK_REHEARSAL_PYTHON``, else the first
   ``python3.13`` or ``python3.12`` on ``PATH`` or installed by pyenv whose version differs from the one running
   this script. With
   none, it says so in one line and exits 0 (skipped): the rest needs that interpreter.
2. **Colab's baseline**: a fresh virtual environment with the packages of ``tools/colab_packages.txt``, pinned
   to the versions Colab preinstalls (the file says where they come from and when they were read).
3. **nnbook, exactly as a chapter's setup cell installs it**: a clone of this repository (its committed
   ``HEAD``) is the stand-in for the published repository; the tag ``v<version>`` is created in that clone when
   it is missing (the real tag is made when the release is published). Every chapter is stamped in memory with
   the setup cell of ``tools/stamp_setup.py`` for the clone's ``file://`` address (the notebooks are the clone's,
   so uncommitted edits are not rehearsed), so the first chapter's setup
   cell runs the same ``pip install 'nnbook[book] @ git+<address>@v<version>'`` a Colab reader's does.
4. **Nothing of the baseline moved**: after that install, every baseline package still has its pinned version,
   except those the file lists as ``# may change: NAME``; the packages the book added are listed.
5. **The package resources load** from the installed package (chapter 9b's teacher weights, chapter 3's
   benchmark, the shipped claims ledger): not from the repository, which is not on ``sys.path``.
6. **Every chapter passes**: each notebook runs top to bottom with nbclient in a kernel of that environment,
   from a folder outside the repository (a copy of the notebooks alone), with Colab's torch, ipywidgets and
   Python; every ``nnbook.claim`` asserts as it does in the book. Outputs are not compared with the stored ones
   (other versions print other digits); the claims are what must hold.

Exit status: 0 when every step passed (or the rehearsal was skipped for want of a Python), 1 otherwise.
It takes about 2 minutes of installs (less with pip's cache) and the chapters' own time (~6 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import stamp_setup  # noqa: E402

PACKAGES = ROOT / "tools" / "colab_packages.txt"
CANDIDATES = ("python3.13", "python3.12")


def log(msg: str) -> None:
    print(f"[colab-rehearsal] {msg}", flush=True)


def norm(name: str) -> str:
    """A distribution name in PEP 503 normal form (``Jinja2`` -> ``jinja2``, ``typing_extensions`` -> ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_baseline(path: Path = PACKAGES) -> tuple[dict[str, str], set[str]]:
    """The pinned baseline ``{normal name: version}`` and the names allowed to change."""
    pins: dict[str, str] = {}
    may_change: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        m = re.match(r"^#\s*may change:\s*([A-Za-z0-9_.\-]+)", line)
        if m:
            may_change.add(norm(m.group(1)))
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$", line)
        if not m:
            raise ValueError(f"{path.name}: expected 'name==version', got {raw!r}")
        pins[norm(m.group(1))] = m.group(2)
    return pins, may_change


def python_version(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(explicit: str | None) -> tuple[str, str] | None:
    """(path, version) of the interpreter to rehearse with, or ``None`` when there is none."""
    own = ".".join(map(str, sys.version_info[:2]))
    choices = [explicit] if explicit else ([os.environ["NNBOOK_REHEARSAL_PYTHON"]]
                                          if os.environ.get("NNBOOK_REHEARSAL_PYTHON") else list(CANDIDATES))
    if not explicit and not os.environ.get("NNBOOK_REHEARSAL_PYTHON"):
        # interpreters that are installed but not on PATH (a pyenv shim answers only for active versions)
        for minor in ("3.13", "3.12"):
            choices += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{minor}*/bin/python{minor}"))
    for c in choices:
        path = shutil.which(c) or (c if Path(c).is_file() else None)
        if not path:
            continue
        v = python_version(path)
        if v is None:
            continue
        if not explicit and ".".join(v.split(".")[:2]) == own:
            continue
        return path, v
    return None


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


def installed(vpy: Path, env: dict) -> dict[str, str]:
    out = run([str(vpy), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], env=env)
    return {norm(d["name"]): d["version"] for d in json.loads(out.stdout)}


def toc_chapters() -> list[str]:
    """The chapter notebooks' stems in the book's order (``_toc.yml``)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    stems: list[str] = []

    def walk(entries):
        for e in entries or []:
            f = e.get("file", "")
            if f.startswith("chapters/"):
                stems.append(Path(f).name)
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return stems


DRIVER = r'''
import json, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

results = {}
for path in map(Path, sys.argv[2:]):
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=int(sys.argv[1]), kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        results[path.stem] = {"ok": True, "s": time.perf_counter() - t0}
    except CellExecutionError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the traceback without its terminal colours
        lines = [l for l in text.splitlines() if l.strip()]
        results[path.stem] = {"ok": False, "s": time.perf_counter() - t0, "error": "\n".join(lines[-12:])}
    except Exception as exc:
        results[path.stem] = {"ok": False, "s": time.perf_counter() - t0,
                              "error": f"{type(exc).__name__}: {exc}"}
    r = results[path.stem]
    print(f"{path.stem}: {'passed' if r['ok'] else 'FAILED'} in {r['s']:.1f} s", flush=True)
    if not r["ok"]:
        print(r["error"], flush=True)
print("RESULTS " + json.dumps(results), flush=True)
'''

PROBE_KERNEL = r'''
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, platform; print(sys.executable, platform.python_version())")])
NotebookClient(nb, timeout=120, kernel_name="python3").execute()
print(nb.cells[0].outputs[0]["text"].strip())
'''

PROBE_RESOURCES = r'''
import sys
import nnbook
from nnbook import charlm, ledger
from nnbook.nas import load_bench
assert "site-packages" in nnbook.__file__, nnbook.__file__
teacher = charlm.load_teacher()
n = sum(p.numel() for p in teacher.parameters())
bench = load_bench()
book = ledger.load_book()
print(f"nnbook {nnbook.__version__} from {nnbook.__file__}")
print(f"chapter 9b teacher: {n:,} parameters; chapter 3 benchmark: {len(bench)} architectures; "
      f"shipped ledger: {sum(len(ch.claims) for ch in book)} claims in {len(book)} chapters")
'''


def rehearse(args) -> int:
    found = find_python(args.python)
    if found is None:
        wanted = args.python or os.environ.get("NNBOOK_REHEARSAL_PYTHON") or " or ".join(CANDIDATES)
        log(f"SKIPPED: no Python other than this one ({sys.version.split()[0]}) was found ({wanted}); "
            "install Python 3.13 (Colab's) or 3.12, or name one with --python or NNBOOK_REHEARSAL_PYTHON")
        return 0
    python, version = found
    log(f"Python {version} ({python}); Colab's default runtime has Python 3.13")
    version_nnbook = stamp_setup.nnbook_version()
    pins, may_change = read_baseline()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nnbook-colab-"))
    work.mkdir(parents=True, exist_ok=True)
    venv = work / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NNBOOK_SEED", "NNBOOK_CLAIM_LOG",
                        "NNBOOK_CLAIM_CONTINUE", "NNBOOK_NOTEBOOK", "JUPYTER_PATH", "JUPYTER_DATA_DIR")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               NNBOOK_CACHE=str(work / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1",
               JUPYTER_DATA_DIR=str(work / "jupyter"), MPLBACKEND="agg")
    env.pop("NNBOOK_PROGRESS", None)  # progress bars on, as on Colab: tqdm.auto draws ipywidgets 7.7 widgets
    t0 = time.perf_counter()

    # 2. Colab's baseline
    run([python, "-m", "venv", "--clear", str(venv)])  # always fresh: a reader's Colab has no nnbook yet
    vpy = venv / "bin" / "python"
    log(f"installing Colab's baseline ({len(pins)} pinned packages from {PACKAGES.relative_to(ROOT)}) ...")
    run([str(vpy), "-m", "pip", "install", "-q", "-r", str(PACKAGES)], env=env, timeout=3600)
    before = installed(vpy, env)
    wrong = {n: (v, before.get(n)) for n, v in pins.items() if before.get(n) != v}
    if wrong:
        log(f"FAILED: the baseline did not install as pinned: {wrong}")
        return 1
    log("baseline: " + ", ".join(f"{n}=={before[n]}" for n in sorted(pins)))
    probe = run([str(vpy), "-c", PROBE_KERNEL], env=env, cwd=work, timeout=300).stdout.strip().splitlines()[-1]
    if not probe.startswith(str(venv)):
        log(f"FAILED: the kernel does not run in the rehearsal environment: {probe}")
        return 1
    log(f"kernel: {probe}")

    # 3. the repository as published: a clone with the release tag, stamped into the chapters
    clone = work / "repository"
    if clone.exists():
        shutil.rmtree(clone)
    run(["git", "clone", "-q", str(ROOT), str(clone)])
    tag = f"v{version_nnbook}"
    tags = run(["git", "-C", str(clone), "tag", "--list", tag]).stdout.split()
    if tag in tags:
        log(f"the release tag {tag} exists: the setup cell installs it")
    else:
        run(["git", "-C", str(clone), "tag", tag])
        log(f"no tag {tag} yet (it is made when the release is published): tagged the clone's HEAD")
    url = clone.as_uri()
    source = stamp_setup.setup_source(url=url, version=version_nnbook)
    stems = args.chapters or toc_chapters()
    book = work / "book"
    if book.exists():
        shutil.rmtree(book)
    (book / "chapters").mkdir(parents=True)
    paths = []
    for stem in stems:
        src = clone / "chapters" / f"{Path(stem).stem}.ipynb"  # the committed chapter, as published
        if not src.is_file():
            log(f"FAILED: no chapter {src.name}")
            return 1
        nb = json.loads(src.read_text(encoding="utf-8"))
        stamp_setup.stamp_cells(nb, source=source)
        dst = book / "chapters" / src.name
        dst.write_text(json.dumps(nb), encoding="utf-8")
        paths.append(dst)
    log(f"setup cell installs: {stamp_setup.requirement(url, version_nnbook)}")

    # 6a. the first chapter: its setup cell installs nnbook
    driver = work / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")

    def execute(ps: list[Path]) -> dict:
        proc = subprocess.run([str(vpy), str(driver), str(args.timeout), *map(str, ps)], env=env, cwd=book,
                              capture_output=True, text=True)
        lines = proc.stdout.splitlines()
        for line in lines:
            if not line.startswith("RESULTS "):
                print("    " + line, flush=True)
        res = [json.loads(line[8:]) for line in lines if line.startswith("RESULTS ")]
        if proc.returncode != 0 or not res:
            print(proc.stderr[-3000:], flush=True)
            return {p.stem: {"ok": False, "s": 0.0, "error": "the driver failed"} for p in ps}
        return res[0]

    results = execute(paths[:1])
    after = installed(vpy, env)
    if "nnbook" not in after:
        log("FAILED: the first chapter's setup cell did not install nnbook")
        return 1
    moved = {n: (v, after.get(n)) for n, v in pins.items() if after.get(n) != v and n not in may_change}
    added = sorted(f"{n}=={v}" for n, v in after.items() if n not in before)
    log(f"installed by the setup cell: {', '.join(added)}")
    if moved:
        log("FAILED: installing nnbook changed Colab's baseline: "
            + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(moved.items())))
        return 1
    kept = sorted(n for n in pins if after.get(n) == pins[n])
    log(f"kept every baseline version ({len(kept)} of {len(pins)}): "
        + ", ".join(f"{n}=={pins[n]}" for n in kept))

    # 5. resources, from the installed package
    out = run([str(vpy), "-c", PROBE_RESOURCES], env=env, cwd=work, timeout=300)
    for line in out.stdout.strip().splitlines():
        log(line)

    # 6b. the other chapters
    results.update(execute(paths[1:]))
    failed = [s for s, r in results.items() if not r["ok"]]
    total = time.perf_counter() - t0
    for stem in [p.stem for p in paths]:
        r = results.get(stem, {"ok": False, "s": 0.0})
        log(f"  {stem:<36} {'passed' if r['ok'] else 'FAILED'}  {r['s']:6.1f} s")
    if failed:
        log(f"FAILED: {len(failed)} of {len(paths)} chapters failed under Python {version} with Colab's packages: "
            + ", ".join(failed) + f" ({total:.0f} s)")
        return 1
    log(f"passed: {len(paths)} chapters under Python {version}, torch {after.get('torch')}, ipywidgets "
        f"{after.get('ipywidgets')}, with nnbook {version_nnbook} installed by the setup cell ({total:.0f} s)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rehearse the Colab path (see the module docstring).")
    parser.add_argument("--python", help="the interpreter to rehearse with (default: python3.13, then python3.12)")
    parser.add_argument("--chapters", nargs="+", help="chapter stems (default: every chapter of _toc.yml)")
    parser.add_argument("--keep", help="work in this folder and keep it afterwards (its environment is made afresh)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    try:
        return rehearse(args)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        log(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
