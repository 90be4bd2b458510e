#!/usr/bin/env python3
"""Run chapters with many seeds and record every claim's range in ``tests/seed_records/``.

Usage::

    python tools/seed_sweep.py chapters/06_regularization.ipynb              # the default 20 seeds
    python tools/seed_sweep.py --seeds 0 1 7 982451653 chapters/03_nas.ipynb -j 2

Each (notebook, seed) runs through ``tools/execute.py --seed`` in its own process
(nothing is saved into the notebook) with ``NNBOOK_CLAIM_LOG`` set, so every
:func:`nnbook.claim` the chapter makes is logged with its value.  The result,
``tests/seed_records/<notebook stem>.json``, holds the seeds tried, the seeds that
failed (with the last line of the error) and, per claim, its bounds, the number of
seeds it held on and the minimum and maximum value seen.  The claims ledger
(appendix) reports these counts; ``tests/test_claims.py`` checks the files.

Exit status 1 when any seed failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "tests" / "seed_records"
# 20 seeds: small ones, and large arbitrary ones (primes, dates, big integers).
DEFAULT_SEEDS = [0, 1, 2, 3, 7, 13, 42, 99, 123, 1000, 2024, 31337, 65537, 99991, 271828, 1000003,
                 20261121, 123456789, 982451653, 2147483647]


def run_one(notebook: Path, seed: int, log: Path, timeout: int) -> tuple[int, str]:
    env = dict(os.environ, NNBOOK_CLAIM_LOG=str(log))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "execute.py"), "--seed", str(seed), str(notebook)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    err = ""
    if proc.returncode != 0:
        errs = [line for line in tail if "Error" in line]
        err = (errs[-1] if errs else (tail[-1] if tail else "failed"))[:300]
    return proc.returncode, err


def summarize(notebook: Path, seeds: list[int], failures: dict, records: list[dict]) -> dict:
    claims: dict[str, dict] = {}
    for r in records:
        c = claims.setdefault(r["id"], {"text": r["text"], "unit": r["unit"], "lower": r["lower"],
                                        "upper": r["upper"], "seeds_ok": [], "seeds_failed": [],
                                        "min": None, "max": None})
        (c["seeds_ok"] if r["ok"] else c["seeds_failed"]).append(r["seed"])
        v = r["value"]
        if v == v:  # not NaN
            c["min"] = v if c["min"] is None else min(c["min"], v)
            c["max"] = v if c["max"] is None else max(c["max"], v)
    for c in claims.values():
        c["n_seeds_ok"] = len(set(c["seeds_ok"]))
        c["seeds_ok"] = sorted(set(c["seeds_ok"]))
        c["seeds_failed"] = sorted(set(c["seeds_failed"]))
    return {"notebook": str(notebook.relative_to(ROOT)), "seeds": seeds,
            "failed_seeds": {str(k): v for k, v in sorted(failures.items())}, "claims": claims}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run notebooks with many seeds; record each claim's range.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks run at once (default 1)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run (default 900)")
    args = parser.parse_args(argv)
    status = 0
    RECORDS.mkdir(parents=True, exist_ok=True)
    for nb in args.notebooks:
        nb = nb.resolve()
        if not nb.is_file():
            parser.error(f"no such notebook: {nb}")
        with tempfile.TemporaryDirectory() as tmp:
            logs = {s: Path(tmp) / f"claims-{s}.jsonl" for s in args.seeds}
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                results = dict(zip(args.seeds, pool.map(lambda s: run_one(nb, s, logs[s], args.timeout), args.seeds)))
            records = []
            for s, log in logs.items():
                if log.exists():
                    records += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        failures = {s: err for s, (rc, err) in results.items() if rc != 0}
        summary = summarize(nb, list(args.seeds), failures, records)
        out = RECORDS / f"{nb.stem}.json"
        tmp_out = out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_out, out)
        print(f"{nb.name}: {len(args.seeds) - len(failures)}/{len(args.seeds)} seeds passed; "
              f"{len(summary['claims'])} claims recorded -> {out.relative_to(ROOT)}")
        for s, err in failures.items():
            print(f"  seed {s} FAILED: {err}")
        for cid, c in sorted(summary["claims"].items()):
            print(f"  {cid}: {c['n_seeds_ok']} ok, range [{c['min']}, {c['max']}], bounds [{c['lower']}, {c['upper']}]")
        status |= bool(failures)
    return status


if __name__ == "__main__":
    sys.exit(main())
