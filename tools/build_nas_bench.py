#!/usr/bin/env python3
"""Build the tabular NAS benchmark of chapter 3 (``nnbook/resources/nas_bench_mnist1d.json``).

Every architecture of :data:`nnbook.nas.SPACE` (216 of them) is trained once with
one fixed recipe, :func:`nnbook.nas.train_arch`, and its scores and costs are
stored, so that search strategies can be compared at equal budget, over many
seeds, in seconds (the idea of NAS-Bench-101 and NAS-Bench-201).

Usage::

    python tools/build_nas_bench.py                  # the whole space, one process, one thread
    python tools/build_nas_bench.py --limit 3 --out /tmp/t.json   # a quick trial

The script is resumable: each finished architecture is appended to
``<out>.partial.jsonl``; a restarted run skips what is there and the final file
is written (atomically) when all architectures are done.

The recipe (stored in the file's header with the command, seed, library
versions, CPU and total CPU time):

* data: MNIST-1D from :func:`nnbook.data.load_mnist1d` with ``val_size=0.2, seed=0``
  (3,200 training, 800 validation, 1,000 test sequences);
* training: :func:`nnbook.nas.train_arch` (through :func:`nnbook.train.fit`): Adam,
  lr 3e-3, batch 128, 10 epochs with a cosine learning-rate schedule,
  ``torch.manual_seed(0)`` before the model is built, loader seed 0, one thread;
* recorded per architecture: validation accuracy after every epoch (for the
  budget-allocation strategies and the proxy study), final validation and test
  accuracy, parameters, FLOPs per sample (:func:`nnbook.measure.flops`, a
  multiply-accumulate = 2 FLOPs) and the median latency of one sample in ms
  (:func:`nnbook.measure.latency`, 10 warm-up and 50 timed calls, one thread).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnbook.data import load_mnist1d, loaders  # noqa: E402
from nnbook.measure import count_params, flops, latency  # noqa: E402
from nnbook.nas.benchmark import RECIPE, train_arch  # noqa: E402
from nnbook.nas.space import SPACE, all_archs  # noqa: E402
from nnbook.train import evaluate  # noqa: E402

OUT = ROOT / "nnbook" / "resources" / "nas_bench_mnist1d.json"


def record(arch, split) -> dict:
    """Train one architecture with the recipe; return its record (accuracies as fractions)."""
    t0 = time.process_time()
    model, hist = train_arch(arch, split)
    train_cpu = time.process_time() - t0
    _, _, test_loader = loaders(split, batch_size=RECIPE["batch_size"], seed=RECIPE["seed"])
    _, test_acc = evaluate(model, test_loader)
    x1 = split.x_test[:1]
    return {**arch.as_dict(), "val_acc": round(hist.val_acc[-1], 5), "test_acc": round(test_acc, 5),
            "val_curve": [round(v, 5) for v in hist.val_acc], "params": count_params(model),
            "flops": flops(model, x1), "latency_ms": round(latency(model, x1, warmup=10, repeats=50).median_ms, 5),
            "train_cpu_s": round(train_cpu, 3), "cpu_s": round(time.process_time() - t0, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="train only the first N architectures (trial runs)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--shard", default="0/1", help="i/n: train only architectures whose index is i modulo n "
                    "(run n such processes to share the work; the last to finish writes the file)")
    ap.add_argument("--reverse", action="store_true", help="go through the architectures from the end (a second "
                    "process on the same shard; it re-reads the partial file before every architecture)")
    args = ap.parse_args(argv)
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    torch.set_num_threads(1)
    split = load_mnist1d(val_size=RECIPE["val_size"], seed=0)
    archs = all_archs()[: args.limit]
    partial = args.out.with_suffix(".partial.jsonl")

    def read_done() -> dict:
        done = {}
        if partial.exists():
            for line in partial.read_text().splitlines():
                r = json.loads(line)
                if r.get("recipe") == RECIPE:
                    done[tuple(r[k] for k in SPACE)] = r
        return done

    done = read_done()
    wall0 = time.perf_counter()
    with open(partial, "a", encoding="utf-8") as fh:
        order = list(enumerate(archs))
        for i, arch in (reversed(order) if args.reverse else order):
            key = tuple(arch.as_dict()[k] for k in SPACE)
            if args.reverse:
                done = read_done()
            if key in done or i % n_shards != shard:
                continue
            r = record(arch, split)
            done[key] = {**r, "recipe": RECIPE}
            fh.write(json.dumps(done[key]) + "\n")  # one short append per architecture
            fh.flush()
            print(f"[{i + 1}/{len(archs)}] {arch}: val {r['val_acc']:.3f} test {r['test_acc']:.3f} "
                  f"{r['cpu_s']:.1f} s CPU", flush=True)
    done = read_done()
    missing = [a for a in archs if tuple(a.as_dict()[k] for k in SPACE) not in done]
    if missing:
        print(f"{len(missing)} architectures are left to other shards; the last shard writes the file")
        return 0
    records = []
    for arch in archs:
        r = dict(done[tuple(arch.as_dict()[k] for k in SPACE)])
        r.pop("recipe")
        records.append(r)
    import mnist1d
    import numpy
    header = {
        "what": "tabular NAS benchmark of nnbook chapter 3: every architecture of the space trained once",
        "command": "python tools/build_nas_bench.py" + (f" --limit {args.limit}" if args.limit else ""),
        "space": {k: list(v) for k, v in SPACE.items()},
        "recipe": {"data": f"nnbook.data.load_mnist1d(val_size={RECIPE['val_size']}, seed=0)",
                   "trainer": "nnbook.nas.train_arch (nnbook.train.fit)", "epochs": RECIPE["epochs"],
                   "optimizer": f"Adam(lr={RECIPE['lr']})", "schedule": "CosineAnnealingLR(T_max=epochs), per epoch",
                   "batch_size": RECIPE["batch_size"], "seed": RECIPE["seed"], "threads": 1,
                   "latency": "nnbook.measure.latency, batch of 1, warmup 10, repeats 50, median ms, one thread",
                   "flops": "nnbook.measure.flops per sample (a multiply-accumulate = 2 FLOPs)"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                     "mnist1d": getattr(mnist1d, "__version__", "0.0.2")},
        "cpu": platform.processor() or platform.machine(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total_cpu_s": round(sum(r["cpu_s"] for r in records), 1),
        "note": "built on a machine shared with other jobs, by single-threaded processes (--shard i/n, --reverse); "
                "latencies are noisy; total_cpu_s is the sum over architectures of training, "
                "evaluation and measurement",
        "n_archs": len(records),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                header["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"header": header, "records": records}, separators=(",", ":")) + "\n")
    os.replace(tmp, args.out)
    if args.limit is None:
        partial.unlink()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB), {len(records)} architectures, "
          f"{header['total_cpu_s']:.0f} s CPU, {time.perf_counter() - wall0:.0f} s wall this run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
