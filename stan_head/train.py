"""Train a head on cached features: ``train_head(TrainConfig) -> TrainSummary``.

Reads only the feature store (or AVE's released feature files, which ``FeatureStore.open`` also
reads). Seeded and deterministic on CPU: the weights are initialised from ``seed``, each epoch's
shuffle comes from its own generator seeded by (seed, epoch), and the dropout RNG is re-seeded at
each epoch start inside a forked RNG scope (the caller's RNG state is left untouched). Because
every epoch starts from a seed, a run resumed from ``last.safetensors`` gives the same weights as
an uninterrupted one.

AdamW with linear warm-up and cosine decay (per step), early stopping on validation accuracy
(ties broken by validation loss), best weights by the same rule, test accuracy of the best
weights at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from features.malloc import HEAD_MMAP_BYTES, HEAD_TRIM_BYTES, raise_malloc_thresholds
from features.runtime import resolve_device, torch_threads
from features.store import FeatureStore
from stan_head import checkpoint
from stan_head.batch import HeadBatch
from stan_head.checkpoint import RunCard
from stan_head.data import load_splits
from stan_head.models import Head, HeadConfig, HeadName, HeadOptions, HeadOutput, build_head

log = logging.getLogger(__name__)

# Fields of TrainConfig that may change between a run and its resume without changing the result
# (not epochs: the cosine schedule spans them; not patience: it decides when the run stops).
_RESUME_FREE = {"out", "store", "device", "num_threads", "resume", "progress"}


class TrainConfig(BaseModel):
    """Everything a training run needs. ``store`` is a feature-store folder or an AVE feature folder.

    ``visual_loss_weight`` (on by default) adds the cross-entropy of STAN's visual evidence
    (``HeadOutput.visual_logits``, the attended cells' class scores): the cells that α picks must
    name the class on their own, which trains the region classifier α is built from (heads
    without visual evidence ignore it).

    ``absence_loss_weight`` (on by default) adds :func:`absence_loss` on STAN's region classifier:
    the classes the sound allows (weighted by the audio posterior q) that the label rules out must
    show in no cell of the clip. It makes every class be found by its own look, not as "the
    sound-alike that is not there" (heads without a region classifier ignore it).

    ``audio_loss_weight`` (on by default) adds the cross-entropy of STAN's audio logits on their own
    (``HeadOutput.audio_logits``). They are the query q that α is built from, and in the fused loss
    they are trained only through ℓ = ℓ^a + ℓ^v: where the visual evidence decides a pair of sound-alike
    classes, the audio is free to prefer one of the pair, and α then looks for the other class's
    object in every clip of the one (DESIGN.md, "Audio loss"). Its own cross-entropy keeps q at what the
    sound says (heads without audio logits ignore it).

    Training length. The region classifier that α is built from needs a few hundred optimiser steps:
    at the earlier default batch of 64, 150 training clips were 3 steps an epoch, 90 steps in 30 epochs,
    and α pointed 0.50 on a development set of our own, 0.68-0.70 after 270-300 steps (DESIGN.md,
    "Training length"). Hence the batch of 16, and ``min_steps`` (300): a training split too small to
    reach it in ``epochs`` gets more epochs. Larger splits are unaffected by ``min_steps``.

    Attention warm-up (on by default; STAN only): α's temperature starts at
    ``attention_warmup_temperature`` (4.0, a soft α) and falls geometrically to the head's τ over
    ``attention_warmup_steps`` (150): early in training the visual-evidence loss then teaches the region
    classifier from the whole frame, instead of from the few cells the untrained classifier happened to
    pick (:func:`attention_temperature_at`; DESIGN.md, "Attention warm-up").

    Auxiliary losses (both off by default): ``segment_loss_weight`` adds the per-segment
    cross-entropy over event/background labels (needs ``head.segment_head``);
    ``attention_entropy_weight`` adds the mean entropy of α (nats) over valid segments, which
    sharpens the spatial attention.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Path = Field(description="a feature-store folder (or features/<dataset> holding one), or an AVE feature folder")
    out: Path = Field(description="the run folder: checkpoint, run.json, metrics.jsonl")
    model: HeadName = Field("stan", description="the head: stan, or a baseline (late_fusion, ave_att)")
    head: HeadOptions = HeadOptions()
    seed: int = Field(0, description="seeds initialisation, shuffling and dropout (same seed, same run)")
    epochs: int = Field(30, ge=1, description="epochs of the cosine learning-rate schedule (raised on a small "
                        "training split to reach min_steps)")
    min_steps: int = Field(300, ge=0, description="optimiser steps the run takes at least: on a small training "
                           "split epochs is raised to ceil(min_steps / steps per epoch), and early stopping "
                           "waits for them")
    batch_size: int = Field(16, ge=1, description="clips per optimiser step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW's decoupled weight decay")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up before the cosine decay")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="the final learning rate as a fraction of --lr")
    grad_clip: float | None = Field(1.0, gt=0, description="gradient-norm clip; None = no clipping")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropies")
    visual_loss_weight: float = Field(1.0, ge=0, description="weight of STAN's visual-evidence cross-entropy (trains "
                                      "the region classifier α is built from)")
    absence_loss_weight: float = Field(5.0, ge=0, description="weight of STAN's absence loss (the classes the "
                                       "sound allows but the label rules out show in no cell)")
    audio_loss_weight: float = Field(1.0, ge=0, description="weight of the cross-entropy of STAN's audio logits on "
                                     "their own (keeps α's query q at what the sound says)")
    segment_loss_weight: float = Field(0.0, ge=0, description="weight of the per-segment event/background "
                                       "cross-entropy (needs --head-segment-head)")
    attention_entropy_weight: float = Field(0.0, ge=0, description="weight of α's mean entropy (sharpens α)")
    attention_warmup_temperature: float | None = Field(4.0, gt=0, description="STAN: α's temperature at the first "
                                                       "step, annealed geometrically to the head's attention_temperature "
                                                       "over attention_warmup_steps")
    attention_warmup_steps: int = Field(150, ge=0, description="optimiser steps of the α temperature warm-up; "
                                        "0 = none (the head's τ throughout)")
    patience: int = Field(8, ge=0, description="epochs without a better val accuracy before stopping; 0 = never")
    train_split: str = Field("train", description="split the head learns from")
    val_split: str = Field("val", description="split that picks the best epoch and stops early")
    test_split: str = Field("test", description="split scored once at the end")
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads during training; None = leave as is")
    resume: bool = Field(True, description="continue a run folder with the same configuration")
    progress: bool = Field(True, description="show a progress bar")

    @model_validator(mode="after")
    def _segment_loss_needs_segment_head(self) -> "TrainConfig":
        if self.segment_loss_weight > 0 and not self.head.segment_head:
            raise ValueError("segment_loss_weight > 0 needs head.segment_head = true")
        return self


class TrainSummary(BaseModel):
    """What a training run produced (small record; the weights stay in ``run_dir``)."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    model: HeadName
    store_id: str
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float | None
    test_accuracy: float | None
    test_segment_accuracy: float | None = None
    test_clips: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    seconds: float

    def summary_line(self) -> str:
        """One line for the command line and flow logs."""
        val = "n/a" if self.best_val_accuracy is None else f"{self.best_val_accuracy:.3f}"
        test = "n/a" if self.test_accuracy is None else f"{self.test_accuracy:.3f}"
        return (
            f"{self.model} on store {self.store_id}: best epoch {self.best_epoch}/{self.epochs_run}, "
            f"val acc {val}, test acc {test} ({self.test_clips} clips) -> {self.run_dir}"
        )


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_ratio·base_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def attention_temperature_at(step: int, start: float | None, end: float, steps: int) -> float | None:
    """α's temperature at optimiser step ``step`` of the warm-up: ``start`` at step 0, geometrically to ``end``
    at ``steps``, then ``end``. None when there is no warm-up (``start`` None or ``steps`` 0): the head's own τ.

    Why: with the sharp τ from the first step, α commits to whichever cells the untrained region classifier
    happens to call the heard class, and the visual-evidence loss then teaches the classifier those cells
    (distractors, background): a soft α spreads the early evidence over the frame until the classifier has
    learnt the objects (DESIGN.md, "Attention warm-up").
    """
    if start is None or steps <= 0 or step >= steps:
        return None
    return start * (end / start) ** (step / steps)


def epochs_to_run(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """The epochs a run takes: ``epochs``, raised so that they make at least ``min_steps`` optimiser steps."""
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))


def mean_over_valid_segments(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of per-segment ``values`` (B,T) over the segments where ``mask`` (B,T) is True (0 if none)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def attention_entropy(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of α (B,T,H,W) over the valid segments of ``mask`` (B,T)."""
    p = alpha.flatten(2)
    return mean_over_valid_segments(-(p * torch.log(p.clamp_min(1e-12))).sum(-1), mask)


def absence_loss(presence: torch.Tensor, audio_logits: torch.Tensor, label: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """The classes the sound allows but the label rules out must show nowhere in the clip.

    With q = softmax(``audio_logits``) (not differentiated: the audio is not asked to change) and
    P_{t,k} = ``presence`` (the largest region probability of class k over segment t's cells),
    the loss is the mean over the valid segments of Σ_{k ≠ y} q_k · (−log(1 − P_{t,k})): a binary
    cross-entropy saying "not shown" for every sound-alike of the label, as strongly as the sound
    makes it a candidate. Classes the sound rules out (q_k ≈ 0), the silent objects of other sounds
    among them, are left alone. The assumption: an object that could have made the sound but did
    not is rarely on screen in the same clip.

    presence (B, T, K) in [0, 1], audio_logits (B, K), label (B,), mask bool (B, T) -> scalar.
    """
    q = torch.softmax(audio_logits.detach(), dim=-1).scatter(1, label[:, None], 0.0)  # (B,K)
    not_shown = -torch.log1p(-presence.clamp(max=1.0 - 1e-6))  # (B,T,K)
    return mean_over_valid_segments((not_shown * q[:, None, :]).sum(-1), mask)


def compute_loss(out: HeadOutput, label: torch.Tensor, segment_mask: torch.Tensor, segment_label: torch.Tensor,
                 cfg: TrainConfig) -> torch.Tensor:
    """Video-level cross-entropy plus the configured auxiliary terms."""
    def label_ce(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, label, label_smoothing=cfg.label_smoothing)

    loss = label_ce(out.logits)
    if cfg.visual_loss_weight > 0 and out.visual_logits is not None:
        loss = loss + cfg.visual_loss_weight * label_ce(out.visual_logits)
    if cfg.audio_loss_weight > 0 and out.audio_logits is not None:
        loss = loss + cfg.audio_loss_weight * label_ce(out.audio_logits)
    if cfg.absence_loss_weight > 0 and out.region_presence is not None and out.audio_logits is not None:
        loss = loss + cfg.absence_loss_weight * absence_loss(out.region_presence, out.audio_logits, label, segment_mask)
    if cfg.segment_loss_weight > 0 and out.segment_logits is not None:
        loss = loss + cfg.segment_loss_weight * F.cross_entropy(out.segment_logits[segment_mask], segment_label[segment_mask])
    if cfg.attention_entropy_weight > 0:
        loss = loss + cfg.attention_entropy_weight * attention_entropy(out.alpha, segment_mask)
    return loss


@torch.inference_mode()
def evaluate_split(head: Head, split: HeadBatch, device: torch.device, batch_size: int = 256) -> dict[str, float | None]:
    """Loss, video-level accuracy and (with a segment head) segment accuracy over valid segments."""
    if len(split) == 0:
        return {"loss": None, "accuracy": None, "segment_accuracy": None}
    was_training = head.training
    head.eval()
    loss_sum, correct, seg_correct, seg_total = 0.0, 0, 0, 0
    for b in split.batches(batch_size, device):
        out = head(b.visual, b.audio, b.segment_mask)
        loss_sum += float(F.cross_entropy(out.logits, b.label, reduction="sum"))
        correct += int((out.logits.argmax(-1) == b.label).sum())
        if out.segment_logits is not None:
            pred = out.segment_logits.argmax(-1)
            seg_correct += int(((pred == b.segment_label) & b.segment_mask).sum())
            seg_total += int(b.segment_mask.sum())
    head.train(was_training)
    n = len(split)
    return {
        "loss": loss_sum / n,
        "accuracy": correct / n,
        "segment_accuracy": seg_correct / seg_total if seg_total else None,
    }


def _rng_scope(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Fork the CPU (and, on CUDA, that device's) RNG so seeding inside leaves the caller's state alone."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def train_head(config: TrainConfig) -> TrainSummary:
    """Train ``config.model`` on ``config.store`` into the run folder ``config.out``; see the module docstring."""
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    raise_malloc_thresholds(HEAD_MMAP_BYTES, HEAD_TRIM_BYTES)  # the batches' cell tensors come from the heap
    store = FeatureStore.open(config.store)
    card = store.card
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    head_cfg = HeadConfig.from_options(
        config.model, config.head, num_classes=len(card.classes), visual_dim=int(card.visual_shape[2]),
        audio_dim=int(card.audio_dim),
    )
    run_card = RunCard.for_store(head_cfg, config.model_dump(mode="json"), store)
    resuming = config.resume and checkpoint.has_training_state(run_dir)
    if resuming:
        previous = checkpoint.read_run_card(run_dir)
        checkpoint.check_store(previous, store, run_dir)
        checkpoint.check_resumable(previous, run_card, run_dir, free=_RESUME_FREE)
    else:
        checkpoint.clear_training_files(run_dir)
    checkpoint.write_run_card(run_dir, run_card)

    splits = load_splits(store, list(dict.fromkeys([config.train_split, config.val_split, config.test_split])))
    train, val, test = splits[config.train_split], splits[config.val_split], splits[config.test_split]
    if len(train) == 0:
        raise ValueError(f"store {config.store} has no clips in split {config.train_split!r}")
    if len(val) == 0:
        log.warning("store %s has no %r clips: no early stopping, the last epoch is kept", config.store, config.val_split)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    epochs = epochs_to_run(config.epochs, config.min_steps, steps_per_epoch)
    if epochs > config.epochs:
        log.info("%d training clips are %d step(s) an epoch: %d epochs instead of %d, to take min_steps=%d steps",
                 len(train), steps_per_epoch, epochs, config.epochs, config.min_steps)
    total_steps = steps_per_epoch * epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    threads = contextlib.nullcontext() if config.num_threads is None else torch_threads(config.num_threads)
    with threads, _rng_scope(device):
        torch.manual_seed(config.seed)
        head = build_head(head_cfg).to(device)
        decay = [p for n, p in head.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in head.named_parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        loop: dict[str, Any] = {
            "epoch": 0, "best_val_accuracy": None, "best_val_loss": None, "best_epoch": 0, "since_best": 0,
            "stopped_early": False,
        }
        resumed_from = None
        if resuming:
            state = checkpoint.load_training_state(run_dir, head, optimizer)
            if state is not None:
                loop.update(state)
                resumed_from = int(loop["epoch"])
                checkpoint.truncate_metrics(run_dir, resumed_from)

        bar = tqdm(
            total=total_steps, initial=min(total_steps, loop["epoch"] * steps_per_epoch), disable=not config.progress,
            desc=f"train {config.model}", unit="step", dynamic_ncols=True,
        )
        try:
            while loop["epoch"] < epochs and not loop["stopped_early"]:
                epoch = loop["epoch"] + 1
                _train_epoch(head, optimizer, train, val, config, device, epoch, steps_per_epoch, total_steps,
                             warmup_steps, bar, loop, run_dir, run_card.store_id)
        finally:
            bar.close()

        if not checkpoint.has_best(run_dir):  # e.g. no validation split: keep the last epoch
            checkpoint.save_best(run_dir, head, run_card.store_id, loop["epoch"])
            loop["best_epoch"] = loop["epoch"]
        checkpoint.load_best(run_dir, head)
        head.to(device)
        test_metrics = evaluate_split(head, test, device, batch_size=max(config.batch_size, 256))

    best_val = loop["best_val_accuracy"]
    run_card = run_card.model_copy(
        update={
            "best_epoch": int(loop["best_epoch"]),
            "metrics": {
                "best_val_accuracy": best_val,
                "test_accuracy": test_metrics["accuracy"],
                "test_segment_accuracy": test_metrics["segment_accuracy"],
                "test_loss": test_metrics["loss"],
                "test_clips": len(test),
                "epochs_run": int(loop["epoch"]),
            },
        }
    )
    checkpoint.write_run_card(run_dir, run_card)
    summary = TrainSummary(
        run_dir=run_dir,
        model=config.model,
        store_id=run_card.store_id,
        epochs_run=int(loop["epoch"]),
        best_epoch=int(loop["best_epoch"]),
        best_val_accuracy=best_val,
        test_accuracy=test_metrics["accuracy"],
        test_segment_accuracy=test_metrics["segment_accuracy"],
        test_clips=len(test),
        stopped_early=bool(loop["stopped_early"]),
        resumed_from_epoch=resumed_from,
        seconds=time.perf_counter() - t_start,
    )
    log.info("%s", summary.summary_line())
    return summary


def _train_epoch(
    head: Head,
    optimizer: torch.optim.Optimizer,
    train: HeadBatch,
    val_split: HeadBatch,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    steps_per_epoch: int,
    total_steps: int,
    warmup_steps: int,
    bar: Any,
    loop: dict[str, Any],
    run_dir: Path,
    store_id: str,
) -> None:
    """One epoch: train, validate, checkpoint, log one metrics line; updates ``loop`` in place."""
    t0 = time.perf_counter()
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout stream of this epoch (inside the forked RNG scope)
    shuffle = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    head.train()
    loss_sum, correct, seen = 0.0, 0, 0
    step = (epoch - 1) * steps_per_epoch
    lr = config.lr
    for b in train.batches(config.batch_size, device, generator=shuffle):
        lr = lr_at(step, total_steps, warmup_steps, config.lr, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tau = attention_temperature_at(step, config.attention_warmup_temperature,
                                       config.head.attention_temperature, config.attention_warmup_steps)
        out = head(b.visual, b.audio, b.segment_mask, attention_temperature=tau)
        loss = compute_loss(out, b.label, b.segment_mask, b.segment_label, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
        optimizer.step()
        n = b.label.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += int((out.logits.detach().argmax(-1) == b.label).sum())
        seen += n
        step += 1
        bar.update(1)
    train_seconds = time.perf_counter() - t0

    val = evaluate_split(head, val_split, device, batch_size=max(config.batch_size, 256))
    # Better = higher val accuracy, or the same accuracy at a lower val loss (on small or easy
    # validation sets accuracy saturates early while the attention is still being learned).
    best_acc, best_loss = loop["best_val_accuracy"], loop.get("best_val_loss")
    improved = val["accuracy"] is not None and (
        best_acc is None
        or val["accuracy"] > best_acc
        or (val["accuracy"] == best_acc and best_loss is not None and val["loss"] < best_loss)
    )
    loop["epoch"] = epoch
    if improved:
        loop.update(best_val_accuracy=val["accuracy"], best_val_loss=val["loss"], best_epoch=epoch, since_best=0)
        checkpoint.save_best(run_dir, head, store_id, epoch)
    elif val["accuracy"] is not None:
        loop["since_best"] += 1
        if config.patience and loop["since_best"] >= config.patience and epoch * steps_per_epoch >= config.min_steps:
            loop["stopped_early"] = True
    if val["accuracy"] is None:  # no validation split: the latest epoch is the one kept
        loop["best_epoch"] = epoch
        checkpoint.save_best(run_dir, head, store_id, epoch)
    record = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_segment_accuracy": val["segment_accuracy"],
        "best_epoch": loop["best_epoch"],
        "train_seconds": train_seconds,
        "epoch_seconds": time.perf_counter() - t0,
    }
    # The metrics line goes first: a kill between the two writes leaves a line ahead of the state,
    # which the resume drops (truncate_metrics) and writes again; the other order would lose it.
    checkpoint.append_metrics(run_dir, record)
    checkpoint.save_training_state(run_dir, head, optimizer, loop)
    bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.3f}",
                    val_acc="n/a" if val["accuracy"] is None else f"{val['accuracy']:.3f}")
    log.debug("epoch %d: %s", epoch, record)


__all__ = ["TrainConfig", "TrainSummary", "attention_entropy", "attention_temperature_at", "compute_loss", "epochs_to_run", "evaluate_split", "lr_at", "train_head"]
