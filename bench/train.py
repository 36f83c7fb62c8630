"""Benchmark: head training epoch time on an AVE-scale feature store, against the compute bound.

    .venv/bin/python bench/train.py                      # AVE scale: 4143 clips × 10 × 7×7×512 + 128-d audio
    .venv/bin/python bench/train.py --clips 96 --epochs 1 --threads 1   # smoke run

The store is generated directly as features (class-structured float16 noise written through
``features.store``'s shard writer, AVE's 3339/402/402 split proportions), cached under ``--work``,
and trained with the real trainer (``stan_head.train.train_head``: validation and checkpoints
each epoch included). The compute bound is the head's FLOPs per epoch (counted with
``torch.utils.flop_counter`` on one real training step and one evaluation batch, scaled to the
epoch) divided by the fp32 matrix-multiply rate measured in the same run with the same threads.
Writes/replaces its section of ``docs/BENCHMARKS.md``. Goal: 30 STAN epochs in under 5 minutes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from docs_section import publish_section  # noqa: E402

from features.store import (  # noqa: E402
    CARD_FILE,
    FeatureBatch,
    FeatureStore,
    ShardData,
    StoreCard,
    clip_sha256,
    shard_path,
    write_card,
    write_parquet_atomic,
    write_shard,
)
from stan_head.checkpoint import read_metrics  # noqa: E402
from stan_head.data import load_split  # noqa: E402
from stan_head.models import HEAD_NAMES, HeadConfig, HeadOptions, build_head  # noqa: E402
from stan_head.train import TrainConfig, compute_loss, train_head  # noqa: E402

log = logging.getLogger("bench.train")



def generate_store(root: Path, clips: int, t: int, hw: int, cv: int, ca: int, classes: int, shard_size: int,
                   seed: int = 0) -> Path:
    """Write an AVE-shaped store (float16) under ``root``; reused when already complete."""
    store_id = f"avescale-{clips}-{t}x{hw}x{hw}x{cv}-{ca}"
    store_dir = root / store_id
    if (store_dir / CARD_FILE).is_file():
        return store_dir
    store_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vis_pat = rng.standard_normal((classes, cv), dtype=np.float32)
    aud_pat = rng.standard_normal((classes, ca), dtype=np.float32)
    n_train, n_val = round(clips * 3339 / 4143), round(clips * 402 / 4143)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (clips - n_train - n_val))
    rng.shuffle(split)
    rows = []
    for shard, lo in enumerate(range(0, clips, shard_size)):
        n = min(shard_size, clips - lo)
        label = rng.integers(0, classes, n)
        visual = rng.standard_normal((n, t, hw, hw, cv), dtype=np.float32)
        audio = rng.standard_normal((n, t, ca), dtype=np.float32)
        seg_label = np.full((n, t), classes, np.int64)
        for i in range(n):
            s0 = int(rng.integers(0, t // 2))
            y, x = rng.integers(0, hw, 2)
            visual[i, s0:, y, x] += vis_pat[label[i]]
            audio[i, s0:] += aud_pat[label[i]]
            seg_label[i, s0:] = label[i]
        visual16, audio16 = visual.astype(np.float16), audio.astype(np.float16)
        mask = np.ones((n, t), bool)
        ids = [f"c{lo + i:05d}" for i in range(n)]
        write_shard(shard_path(store_dir, shard, "hdf5"),
                    ShardData(FeatureBatch(ids, visual16, audio16, mask, label.astype(np.int64), seg_label), {"clip_id": ids}),
                    "hdf5")
        for i in range(n):
            rows.append({"clip_id": ids[i], "shard": shard, "row": i, "label_idx": int(label[i]), "split": split[lo + i],
                         "sha256": clip_sha256(visual16[i], audio16[i], mask[i]), "event_start_s": 0.0,
                         "event_end_s": float(t), "has_audio": True})
        log.info("generated shard %d (%d clips)", shard, n)
    write_parquet_atomic(store_dir / "index.parquet", pd.DataFrame(rows))
    write_card(store_dir, StoreCard(
        store_id=store_id, format="hdf5", dataset_name="ave-scale-bench", classes=[f"event{k:02d}" for k in range(classes)],
        num_segments=t, visual_shape=(hw, hw, cv), audio_dim=ca, clips=clips, shard_size=shard_size,
        num_shards=(clips + shard_size - 1) // shard_size, segment={"num_segments": t, "segment_s": 1.0},
    ))
    return store_dir


def matmul_rate(threads: int, repeats: int = 5, device: str = "cpu") -> dict[str, float]:
    """Best fp32 GFLOP/s of a 2048² matmul and of the head's dominant shape (64·10·49 × 512 @ 512 × 128) on ``device``."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for name, (m, k, n) in {"square_2048": (2048, 2048, 2048), "head_projection": (31360, 512, 128)}.items():
        a, b = torch.randn(m, k, device=dev), torch.randn(k, n, device=dev)
        torch.mm(a, b)
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
        out[name] = 2 * m * k * n / best / 1e9
    return out


def flops_per_epoch(store: FeatureStore, cfg: TrainConfig) -> dict[str, float]:
    """FLOPs of one epoch: training steps (forward + backward) over the train split, forward over val."""
    card = store.card
    h, w, cv = card.visual_shape
    head = build_head(HeadConfig.from_options(cfg.model, cfg.head, num_classes=len(card.classes), visual_dim=cv,
                                              audio_dim=card.audio_dim))
    n_train = int((store.index["split"] == cfg.train_split).sum())
    n_val = int((store.index["split"] == cfg.val_split).sum())
    b = min(cfg.batch_size, n_train)
    fb = store.read(np.arange(b))
    visual, audio = torch.from_numpy(fb.visual).float(), torch.from_numpy(fb.audio).float()
    mask, label, seg = torch.from_numpy(fb.segment_mask), torch.from_numpy(fb.label_idx), torch.from_numpy(fb.segment_label)
    with FlopCounterMode(display=False) as counter:
        out = head(visual, audio, mask)
        compute_loss(out, label, mask, seg, cfg).backward()
    train_step = counter.get_total_flops() / b
    head.eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        head(visual, audio, mask)
    eval_clip = counter.get_total_flops() / b
    return {"train_per_clip": train_step, "eval_per_clip": eval_clip,
            "epoch": train_step * n_train + eval_clip * n_val, "n_train": n_train, "n_val": n_val}




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=4143)
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--hw", type=int, default=7)
    p.add_argument("--visual-dim", type=int, default=512)
    p.add_argument("--audio-dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=28)
    p.add_argument("--model", default="stan", choices=list(HEAD_NAMES))
    p.add_argument("--epochs", type=int, default=3, help="epochs measured (the 30-epoch time is projected)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.model_fields["batch_size"].default,
                   help="default: the library's")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (bench/gpu_check.sh)")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "bench-train")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    store_dir = generate_store(args.work / "stores", args.clips, args.segments, args.hw, args.visual_dim,
                               args.audio_dim, args.classes, shard_size=256)
    gen_s = time.perf_counter() - t0
    store = FeatureStore.open(store_dir)
    t0 = time.perf_counter()
    train_split = load_split(store, "train")
    load_s = time.perf_counter() - t0
    gib = (train_split.visual.numel() + train_split.audio.numel()) * 2 / 2**30
    del train_split

    cfg = TrainConfig(store=store_dir, out=args.work / f"run-{args.model}-{args.clips}", model=args.model,
                      head=HeadOptions(), epochs=args.epochs, batch_size=args.batch_size, num_threads=args.threads,
                      min_steps=0, patience=0, resume=False, progress=True, device=args.device)
    rates = matmul_rate(args.threads, device=args.device)
    flops = flops_per_epoch(store, cfg)
    summary = train_head(cfg)
    lines = read_metrics(cfg.out)
    epoch_s = statistics.median(x["epoch_seconds"] for x in lines)
    train_s = statistics.median(x["train_seconds"] for x in lines)
    rate = max(rates.values()) * 1e9
    bound_s = flops["epoch"] / rate
    projected_30 = 30 * epoch_s
    figures = {
        "clips": args.clips, "model": args.model, "threads": args.threads, "batch_size": args.batch_size,
        "epochs_measured": len(lines), "epoch_seconds_median": epoch_s, "train_seconds_median": train_s,
        "projected_30_epochs_s": projected_30, "gflop_per_epoch": flops["epoch"] / 1e9,
        "matmul_gflops": rates, "compute_bound_epoch_s": bound_s, "ratio_to_bound": epoch_s / bound_s,
        "split_load_s": load_s, "train_split_gib": gib, "store_generation_s": gen_s,
        "final_val_accuracy": lines[-1]["val_accuracy"], "test_accuracy": summary.test_accuracy,
    }
    log.info("figures: %s", json.dumps(figures))
    scaled = (f"; × 4143/{args.clips} clips ≈ {projected_30 * 4143 / args.clips:.0f} s at AVE scale (linear extrapolation)"
              if args.clips < 4143 else "")
    smoke = " — SMOKE RUN at reduced size, not the AVE-scale figure" if args.clips < 4143 else ""
    cmd = "python bench/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"""## Head training (`bench/train.py`){smoke}

Command: `{cmd.strip()}` — machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {args.device}.
Store: {args.clips} clips × {args.segments} segments × {args.hw}×{args.hw}×{args.visual_dim} float16 visual + {args.audio_dim}-d audio,
{args.classes} classes, generated as features ({flops['n_train']} train / {flops['n_val']} val clips; train split {gib:.2f} GiB float16,
loaded in {load_s:.1f} s). Model `{args.model}` (default `HeadOptions`), batch {args.batch_size}, measured over {len(lines)} epoch(s).

| figure | value |
| --- | --- |
| epoch time (median; train + validation + checkpoint) | {epoch_s:.2f} s |
| of which training steps | {train_s:.2f} s |
| projected 30 epochs | {projected_30:.0f} s{scaled} (goal < 300 s at 4143 clips) |
| head FLOPs per epoch (train fwd+bwd + val fwd) | {flops['epoch'] / 1e9:.1f} GFLOP |
| fp32 matmul rate on the device, same run (2048² / head projection shape) | {rates['square_2048']:.1f} / {rates['head_projection']:.1f} GFLOP/s |
| compute bound per epoch (FLOPs ÷ best matmul rate) | {bound_s:.2f} s |
| **epoch time ÷ compute bound** | **{epoch_s / bound_s:.2f}×** |
"""
    publish_section(args.docs, "bench/train.py", text, write=not args.no_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
