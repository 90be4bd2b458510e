#!/usr/bin/env python3
"""Train chapter 2's models over several seeds and longer budgets; store the results.

Usage:  python tools/build_ch2_runs.py [--out nnbook/resources/ch02_runs.json]

Chapter 2 trains each architecture once, live, with the reader's seed and a 10-epoch
budget. Two questions need more compute than a notebook's minute: how much do the
results vary with the seed (the table reports mean ± sd over the seeds stored here),
and is the gap to the MNIST-1D reference accuracies a matter of the training budget
(the long runs stored here train the same models far longer). The chapter re-trains
its own seed live and checks it against this file.

The recipe is the chapter's: Adam, learning rate 1e-2, cosine schedule over the run,
batches of 128, one CPU thread, data and initialization seeded per run.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import nnbook  # noqa: E402
from nnbook import models  # noqa: E402
from nnbook.data import load_mnist1d, loaders  # noqa: E402
from nnbook.train import evaluate, fit  # noqa: E402

SHORT_EPOCHS, LONG_EPOCHS, BATCH, LR, H = 10, 60, 128, 1e-2, 32
SHORT_SEEDS = [0, 1, 2, 3, 4]
LONG_SEEDS = [0, 1, 2]

MODELS = {
    "softmax regression": lambda: models.softmax_regression(40, 10),
    "MLP": lambda: models.mlp(40, (100, 100), 10),
    "CNN": lambda: models.ConvNet1d(),
    "CNN (reference layout)": lambda: models.ReferenceConvNet1d(),
    "plain RNN": lambda: models.RecurrentClassifier("rnn", hidden=H),
    "GRU": lambda: models.RecurrentClassifier("gru", hidden=H),
    "GNN": lambda: models.MessagePassingGNN(hidden=32, rounds=3, k=2),
    "Transformer": lambda: models.TransformerClassifier(d_model=32, n_heads=4, n_layers=1, patch=4),
}
LONG_MODELS = ["MLP", "CNN", "CNN (reference layout)", "GRU"]


def input_gradient_ratio(model, split) -> float:
    """Mean |dL/dx_1| / mean |dL/dx_40| over 256 test signals (chapter 2's vanishing-gradient probe)."""
    model = copy.deepcopy(model).cpu().eval()
    x = split.x_test[:256].clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), split.y_test[:256]).backward()
    g = x.grad.abs().mean(0)
    return float(g[0] / g[-1])


def run(name: str, seed: int, epochs: int, split) -> dict:
    torch.manual_seed(seed)
    model = MODELS[name]()
    train_loader, _, test_loader = loaders(split, batch_size=BATCH, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    curve = []
    hist = fit(model, train_loader, epochs=epochs, optimizer=opt, scheduler=sched, device="cpu", n_classes=10,
               progress=False, callbacks=[lambda e, m, h: curve.append(evaluate(m, test_loader)[1]) and False])
    out = {"test_acc": curve[-1], "train_acc": evaluate(model, loaders(split, 512, seed)[0])[1],
           "train_time_s": round(sum(hist.epoch_time_s), 2)}
    if epochs != SHORT_EPOCHS:
        out["test_acc_per_epoch"] = [round(a, 4) for a in curve]
    if name in ("plain RNN", "GRU"):
        out["first_over_last_gradient"] = input_gradient_ratio(model, split)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "nnbook" / "resources" / "ch02_runs.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    split = load_mnist1d()
    t0, cpu0 = time.time(), time.process_time()
    short = {name: {} for name in MODELS}
    for seed in SHORT_SEEDS:
        for name in MODELS:
            short[name][str(seed)] = run(name, seed, SHORT_EPOCHS, split)
            print(f"short {name} seed {seed}: {short[name][str(seed)]['test_acc']:.3f}", flush=True)
    long = {name: {} for name in LONG_MODELS}
    for seed in LONG_SEEDS:
        for name in LONG_MODELS:
            long[name][str(seed)] = run(name, seed, LONG_EPOCHS, split)
            print(f"long {name} seed {seed}: {long[name][str(seed)]['test_acc']:.3f}", flush=True)
    header = {
        "command": "python tools/build_ch2_runs.py",
        "date": dt.date.today().isoformat(),
        "nnbook": nnbook.__version__, "torch": torch.__version__.split("+")[0], "python": platform.python_version(),
        "wall_time_s": round(time.time() - t0, 1), "cpu_time_s": round(time.process_time() - cpu0, 1),
        "recipe": {"optimizer": "Adam", "lr": LR, "schedule": "cosine over the run", "batch": BATCH,
                   "short_epochs": SHORT_EPOCHS, "long_epochs": LONG_EPOCHS, "threads": 1,
                   "data": "nnbook.data.load_mnist1d() (4000 train / 1000 test)"},
        "short_seeds": SHORT_SEEDS, "long_seeds": LONG_SEEDS,
    }
    data = {"header": header, "short": short, "long": long}
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} in {header['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
