#!/usr/bin/env python3
"""Run chapters with fresh random seeds and record every claim's values in ``tests/seed_records/``.

Usage::

    python tools/seed_sweep.py chapters/06_regularization.ipynb          # 20 fresh random seeds
    python tools/seed_sweep.py -n 24 -j 2 chapters/03_nas.ipynb           # 24 seeds, two runs at once
    python tools/seed_sweep.py --seeds 17 3141592653 chapters/04_pruning.ipynb   # replay given seeds

The seeds are **drawn afresh on every run** (``secrets``, uniform in ``[0, 2**31)``) and printed
first, so a failure can be replayed with ``--seeds``: the minimum of 20 fixed seeds does not bound
the 21st, so a fixed list would let a fragile claim pass forever.

Each (notebook, seed) runs through ``tools/execute.py --seed`` in its own process (nothing is saved
into the notebook) with ``NNBOOK_CLAIM_LOG`` set, so every :func:`nnbook.claim` the chapter makes
is logged with its value, and with ``NNBOOK_CLAIM_CONTINUE=1``, so a failing claim is logged as
failed and the run goes on to measure the claims after it (the sweep still counts that seed as
failed). The result, ``tests/seed_records/<notebook stem>.json``, holds the seeds tried, the seeds
that failed (with the last line of the error) and, per claim, its bounds, every value seen
(``values``: ``[seed, value]`` pairs), and their minimum, maximum, mean and standard deviation.

``tests/test_seed_records.py`` checks the files against the stored notebooks: every claim of every
chapter has a record from at least 20 seeds, every recorded value satisfies the claim's *current*
bound, and that bound lies at least 4 standard deviations from the mean (a bound closer than that
fails for some seed nobody tried). A claim's record stays valid when only its bound changes, since
the values do not depend on the bound; a change to what a chapter computes needs a new sweep.

Exit status 1 when any seed failed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "tests" / "seed_records"
N_SEEDS = 20          # the fewest seeds a record may have (tests/test_seed_records.py)
SEED_LIMIT = 2 ** 31  # fresh seeds are drawn uniformly from [0, SEED_LIMIT)


def fresh_seeds(n: int) -> list[int]:
    """``n`` distinct seeds drawn from the operating system's random source."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"fresh_seeds: n must be a positive int, got {n!r}")
    seeds: list[int] = []
    while len(seeds) < n:
        s = secrets.randbelow(SEED_LIMIT)
        if s not in seeds:
            seeds.append(s)
    return seeds


def run_one(notebook: Path, seed: int, log: Path, timeout: int) -> tuple[int, str]:
    env = dict(os.environ, NNBOOK_CLAIM_LOG=str(log), NNBOOK_CLAIM_CONTINUE="1")
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "execute.py"), "--seed", str(seed),
                               str(notebook)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout} s"
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    err = ""
    if proc.returncode != 0:
        errs = [line for line in tail if "Error" in line]
        err = (errs[-1] if errs else (tail[-1] if tail else "failed"))[:300]
    return proc.returncode, err


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof=1``) of the finite values; ``None`` when there are none."""
    xs = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def summarize(notebook: Path, seeds: list[int], failures: dict, records: list[dict]) -> dict:
    claims: dict[str, dict] = {}
    for r in records:
        c = claims.setdefault(r["id"], {"text": r["text"], "unit": r["unit"], "lower": r["lower"],
                                        "upper": r["upper"], "values": [], "seeds_ok": [], "seeds_failed": []})
        (c["seeds_ok"] if r["ok"] else c["seeds_failed"]).append(r["seed"])
        c["values"].append([r["seed"], r["value"]])
    for cid, c in claims.items():
        if any(s in c["seeds_failed"] for s in c["seeds_ok"]):  # a claim made twice in one run
            c["seeds_ok"] = [s for s in c["seeds_ok"] if s not in c["seeds_failed"]]
        c["seeds_ok"] = sorted(set(c["seeds_ok"]))
        c["seeds_failed"] = sorted(set(c["seeds_failed"]))
        c["n_seeds_ok"] = len(c["seeds_ok"])
        vals = [v for _, v in c["values"] if v == v]  # not NaN
        c["min"] = min(vals) if vals else None
        c["max"] = max(vals) if vals else None
        c["mean"], c["std"] = mean_std(vals)
        c["values"].sort()
    for s, err in list(failures.items()):
        failing = sorted(cid for cid, c in claims.items() if s in c["seeds_failed"])
        if failing and not err:
            failures[s] = "claims failed: " + ", ".join(failing)
    import torch

    return {"notebook": str(notebook.relative_to(ROOT)), "seeds": seeds,
            "drawn": "fresh random seeds (tools/seed_sweep.py)",
            "swept": _dt.date.today().isoformat(), "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(),
            "failed_seeds": {str(k): v for k, v in sorted(failures.items())}, "claims": claims}


def sweep(nb: Path, seeds: list[int], jobs: int, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        logs = {s: Path(tmp) / f"claims-{s}.jsonl" for s in seeds}
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = dict(zip(seeds, pool.map(lambda s: run_one(nb, s, logs[s], timeout), seeds)))
        records = []
        for s, log in logs.items():
            if log.exists():
                records += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    failures = {s: err for s, (rc, err) in results.items() if rc != 0}
    for r in records:  # a claim that failed under NNBOOK_CLAIM_CONTINUE fails its seed
        if not r["ok"]:
            failures.setdefault(r["seed"], "")
    return summarize(nb, list(seeds), failures, records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run notebooks with fresh random seeds; record each claim's values.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("-n", "--n-seeds", type=int, default=N_SEEDS, help=f"fresh seeds to draw (default {N_SEEDS})")
    parser.add_argument("--seeds", nargs="+", type=int, help="replay these seeds instead of drawing fresh ones")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run (default 900)")
    parser.add_argument("--no-write", action="store_true", help="print the summary; leave tests/seed_records alone")
    args = parser.parse_args(argv)
    if args.seeds and any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    if args.n_seeds < 1:
        parser.error(f"--n-seeds must be >= 1, got {args.n_seeds}")
    status = 0
    RECORDS.mkdir(parents=True, exist_ok=True)
    for nb in args.notebooks:
        nb = nb.resolve()
        if not nb.is_file():
            parser.error(f"no such notebook: {nb}")
        seeds = list(args.seeds) if args.seeds else fresh_seeds(args.n_seeds)
        print(f"{nb.name}: seeds {' '.join(map(str, seeds))}", flush=True)
        summary = sweep(nb, seeds, args.jobs, args.timeout)
        failures = summary["failed_seeds"]
        if not args.no_write:
            out = RECORDS / f"{nb.stem}.json"
            tmp_out = out.with_suffix(".json.tmp")
            tmp_out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp_out, out)
        print(f"{nb.name}: {len(seeds) - len(failures)}/{len(seeds)} seeds passed; "
              f"{len(summary['claims'])} claims recorded", flush=True)
        for s, err in failures.items():
            print(f"  seed {s} FAILED: {err}  (replay: python tools/seed_sweep.py --seeds {s} {nb.name})")
        for cid, c in sorted(summary["claims"].items()):
            m, sd = c["mean"], c["std"]
            stats = "no finite value" if m is None else f"mean {m:.4g}, sd {sd:.3g}, range [{c['min']:.4g}, {c['max']:.4g}]"
            print(f"  {cid}: {c['n_seeds_ok']}/{len(seeds)} ok, {stats}, bounds [{c['lower']}, {c['upper']}]")
        status |= bool(failures)
    return status


if __name__ == "__main__":
    sys.exit(main())
