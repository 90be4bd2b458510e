"""Claims that hold for seeds nobody tried: every claim's bound keeps 4 standard deviations from its mean.

Chapters are re-run with seeds the authors never saw, and the minimum of 20 runs does not bound the 21st.
So each chapter is swept with 20 or more *fresh random* seeds (``tools/seed_sweep.py``), which records
every claim's values, mean and standard deviation in ``tests/seed_records/<stem>.json``. For every claim
of every stored chapter (the bound as the chapter asserts it today, read through ``nnbook.ledger``):

* the record holds values from at least ``MIN_SEEDS`` seeds, and every one of them satisfies the bound;
* each bound lies at least ``MARGIN`` standard deviations from the mean, on the right side, so that a
  normal spread crosses it about once in 30,000 runs;
* a claim with no spread (the same value for every seed: a count, an exact match, a fact about the
  machine) passes when that value satisfies the bound: no spread is possible, the value does not depend
  on the seed, and the test says so in its report.

A record stays valid when only a claim's bound changes (its values do not depend on the bound); a change
to what a chapter computes needs a new sweep (``python tools/seed_sweep.py chapters/<stem>.ipynb``).

``tests/seed_records/pending.json`` lists what is known not to meet this yet — a chapter not yet swept
with fresh seeds, or a claim whose bound is too close — each with the reason and the issue that fixes it.
The test fails when an entry is stale (the chapter now has a fresh record, or the claim now keeps its
margin), so the list can only shrink and always says exactly what is missing.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nnbook import ledger

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "tests" / "seed_records"
PENDING = RECORDS / "pending.json"
MIN_SEEDS = 20
MARGIN = 4.0

CHAPTERS = ledger.read_book(ROOT)
PENDING_ENTRIES = json.loads(PENDING.read_text(encoding="utf-8")) if PENDING.is_file() else {}


def fresh_record(stem: str) -> dict | None:
    path = RECORDS / f"{stem}.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    return rec if rec.get("drawn", "").startswith("fresh") else None  # the old fixed-seed records have no values


def margin_problems(c: dict, r: dict | None) -> list[str]:
    """What keeps claim ``c`` (as stored) from its margin, given its seed record ``r``; [] when nothing."""
    if r is None:
        return ["no record: the chapter's last sweep did not make this claim"]
    values = [v for _, v in r.get("values", [])]
    seeds = {s for s, _ in r.get("values", [])}
    if len(seeds) < MIN_SEEDS:
        return [f"values from {len(seeds)} seeds, fewer than {MIN_SEEDS}"]
    lo, hi = c.get("lower"), c.get("upper")
    out = []
    bad = [v for v in values if not (isinstance(v, (int, float)) and math.isfinite(v))
           or (lo is not None and v < lo) or (hi is not None and v > hi)]
    if bad:
        out.append(f"{len(bad)} of {len(values)} values break the bound (e.g. {bad[0]})")
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    if sd == 0:
        return out  # no spread possible: the value does not depend on the seed
    for b, side in ((lo, 1), (hi, -1)):
        if b is not None and side * (m - b) < MARGIN * sd:
            out.append(f"bound {b:g} is {side * (m - b) / sd:.2f} sd from the mean {m:.4g} (sd {sd:.3g}); "
                       f"{MARGIN:g} needed")
    return out


def chapter_ids():
    return [ch.stem for ch in CHAPTERS]


@pytest.mark.parametrize("stem", chapter_ids())
def test_every_claim_keeps_its_margin(stem):
    ch = next(c for c in CHAPTERS if c.stem == stem)
    pending = PENDING_ENTRIES.get(stem, {})
    rec = fresh_record(stem)
    if rec is None:
        assert "*" in pending, (f"{stem}: no sweep with fresh seeds: run python tools/seed_sweep.py "
                                f"chapters/{stem}.ipynb (or list the chapter in {PENDING.name} with the reason)")
        pytest.skip(f"{stem}: not yet swept with fresh seeds ({pending['*']})")
    assert "*" not in pending, f"{stem} has a fresh seed record now: remove its '*' entry from {PENDING.name}"
    assert len(rec.get("seeds", [])) >= MIN_SEEDS, f"{stem}: swept with {len(rec.get('seeds', []))} seeds"
    problems, stale = {}, []
    for c in ch.claims:
        p = margin_problems(c, rec["claims"].get(c["id"]))
        if p and c["id"] not in pending:
            problems[c["id"]] = p
        if not p and c["id"] in pending:
            stale.append(c["id"])
    unknown = sorted(set(pending) - {c["id"] for c in ch.claims})
    assert not problems, f"{stem}: claims too close to their bounds for an unknown seed: {problems}"
    assert not stale, f"{stem}: these claims keep their margin now; remove them from {PENDING.name}: {stale}"
    assert not unknown, f"{stem}: {PENDING.name} lists claims the chapter does not make: {unknown}"


def test_pending_entries_say_why():
    for stem, entries in PENDING_ENTRIES.items():
        assert (ROOT / "chapters" / f"{stem}.ipynb").is_file(), f"{PENDING.name}: no chapter {stem}"
        for cid, why in entries.items():
            assert isinstance(why, str) and len(why) > 20, f"{PENDING.name}: {stem}/{cid} needs a reason"


def test_the_margin_check_can_fail():
    values = [[s, 1.0 + 0.1 * (s % 5)] for s in range(20)]   # mean 1.2, sd about 0.145
    assert margin_problems({"lower": 0.5}, {"values": values}) == []        # 4.8 sd away
    assert margin_problems({"lower": 0.9}, {"values": values})              # 2.1 sd away
    assert margin_problems({"upper": 1.3}, {"values": values})              # a value above the bound
    assert margin_problems({"lower": 0.0}, {"values": values[:10]})         # too few seeds
    assert margin_problems({"upper": 3.0}, {"values": [[s, 3.0] for s in range(20)]}) == []  # no spread
    assert margin_problems({"upper": 2.9}, {"values": [[s, 3.0] for s in range(20)]})         # ... but broken
