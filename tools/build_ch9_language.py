#!/usr/bin/env python3
"""Train chapter 9b's teacher language model and ship its weights.

Usage:  python tools/build_ch9_language.py [--steps 2000] [--out nnbook/resources/ch9_charlm_teacher.pt]

The teacher is the chapter's large character-level LSTM (:class:`nnbook.charlm.CharLM`,
hidden 256, embedding 32, one layer; about 325 000 parameters, 1.3 MB in float32).
Training it takes minutes of CPU, more than a chapter's budget, so this script trains
it once and stores its weights (float32 state dict) beside a JSON sidecar recording the
command, the Python/torch versions, the corpus (modules, length, SHA-256) and the
teacher's validation and test bits per character.  The chapter loads the weights,
evaluates them live and checks its own number against the recorded one.

Recipe: the corpus of :func:`nnbook.charlm.build_corpus`, split 80/10/10 in contiguous
blocks; random windows of 64 characters, batches of 64, Adam with learning rate
3e-3, cosine decay over the run (stepped every 100 steps), one CPU thread, seed 0;
training through :func:`nnbook.train.fit` with :func:`nnbook.charlm.lm_step`.  The
weights at the step with the lowest validation bits per character are kept.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from nnbook import charlm  # noqa: E402
from nnbook.train import fit  # noqa: E402

HIDDEN, EMBED, SEQ, BATCH, LR, SEED, CHUNK = 256, 32, 64, 64, 3e-3, 0, 100


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "nnbook" / "resources" / "ch9_charlm_teacher.pt"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    text = charlm.build_corpus()
    info = charlm.corpus_info(text)
    train, val, test = charlm.split_corpus(charlm.encode(text))
    model = charlm.CharLM(hidden=HIDDEN, embed=EMBED)
    epochs = args.steps // CHUNK
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best = {"val_bpc": float("inf")}
    curve = []
    t0 = time.time()

    def keep_best(epoch, m, hist):
        bpc = charlm.bits_per_char(m, val)
        curve.append([(epoch + 1) * CHUNK, round(bpc, 4)])
        print(f"step {(epoch + 1) * CHUNK:5d}  train {hist.train_loss[-1] / 0.6931:.3f}  val {bpc:.4f} bits/char"
              f"  ({time.time() - t0:.0f} s)", flush=True)
        if bpc < best["val_bpc"]:
            best.update(val_bpc=bpc, step=(epoch + 1) * CHUNK, state=copy.deepcopy(m.state_dict()))
        return False

    fit(model, charlm.RandomWindows(train, SEQ, BATCH, CHUNK, seed=SEED), epochs=epochs, optimizer=opt,
        scheduler=sched, step=charlm.lm_step, callbacks=[keep_best], progress=False, device="cpu")
    model.load_state_dict(best["state"])
    out = Path(args.out)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config(), "state_dict": state}, out)
    meta = {
        "command": "python tools/build_ch9_language.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(), "torch": torch.__version__,
        "corpus": {k: info[k] for k in ("modules", "chars", "sha256")},
        "model": model.config(), "params": sum(p.numel() for p in model.parameters()),
        "recipe": {"steps": args.steps, "seq_len": SEQ, "batch": BATCH, "lr": LR, "seed": SEED,
                   "schedule": f"cosine over {epochs} chunks of {CHUNK} steps", "threads": 1},
        "best_step": best["step"],
        "val_bpc": round(charlm.bits_per_char(model, val), 4),
        "test_bpc": round(charlm.bits_per_char(model, test), 4),
        "curve": curve, "train_seconds": round(time.time() - t0, 1),
        "weights_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: meta[k] for k in ("val_bpc", "test_bpc", "best_step", "params", "train_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
