"""Training: learns, deterministic, checkpoints round-trip and refuse the wrong store, resumes after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from features.store import FeatureStore
from heap_probe import assert_fresh_then_reused, faults_around
from stan_head.checkpoint import StoreMismatchError, load_run
from stan_head.data import load_split
from stan_head.models import HeadOptions
from stan_head.train import TrainConfig, attention_temperature_at, epochs_to_run, lr_at, train_head

SMALL = HeadOptions(d_model=16, attn_dim=8, hidden_dim=16, lstm_hidden=8, dropout=0.1)


def _cfg(store: Path, out: Path, **kw) -> TrainConfig:
    # min_steps=0: these tests ask for a number of epochs and count them.
    base = dict(store=store, out=out, head=SMALL, epochs=6, batch_size=8, lr=3e-3, num_threads=1, progress=False,
                min_steps=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def stan_run(tiny_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stan"
    return out, train_head(_cfg(tiny_store, out, epochs=10, segment_loss_weight=0.5, head=SMALL.model_copy(update={"segment_head": True})))


def test_stan_learns_and_writes_the_run_folder(stan_run):
    out, summary = stan_run
    assert summary.test_accuracy is not None and summary.test_accuracy >= 0.9
    assert summary.test_segment_accuracy is not None and summary.test_segment_accuracy > 0.5
    assert {"run.json", "model.safetensors", "last.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(1, summary.epochs_run + 1))
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    card = json.loads((out / "run.json").read_text())
    assert card["store_id"] == "teststore01" and card["visual_shape"] == [3, 3, 16] and card["classes"][0] == "class0"
    assert card["metrics"]["test_accuracy"] == summary.test_accuracy


@pytest.mark.parametrize("model", ["late_fusion", "ave_att"])
def test_baselines_train_through_the_same_trainer(tiny_store, tmp_path, model):
    summary = train_head(_cfg(tiny_store, tmp_path / model, model=model, epochs=10))
    assert summary.model == model and summary.test_accuracy is not None and summary.test_accuracy >= 0.75


def test_same_seed_same_weights_other_seed_other_weights(tiny_store, tmp_path):
    a = train_head(_cfg(tiny_store, tmp_path / "a", epochs=2))
    b = train_head(_cfg(tiny_store, tmp_path / "b", epochs=2))
    c = train_head(_cfg(tiny_store, tmp_path / "c", epochs=2, seed=1))
    wa, wb, wc = (load_file(str(r.run_dir / "last.safetensors")) for r in (a, b, c))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if k.startswith("model."))


def test_caller_rng_state_is_left_alone(tiny_store, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_head(_cfg(tiny_store, tmp_path / "r", epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_round_trip(stan_run, tiny_store):
    out, summary = stan_run
    store = FeatureStore.open(tiny_store)
    run = load_run(out, store=store)
    batch = store.read_split("test")
    with torch.inference_mode():
        res = run.head(torch.from_numpy(batch.visual).float(), torch.from_numpy(batch.audio).float(),
                       torch.from_numpy(batch.segment_mask))
    acc = (res.logits.argmax(-1).numpy() == batch.label_idx).mean()
    assert acc == pytest.approx(summary.test_accuracy)
    assert res.segment_logits is not None


def test_checkpoint_refuses_other_store_id(stan_run, other_store):
    out, _ = stan_run
    with pytest.raises(StoreMismatchError) as err:
        load_run(out, store=FeatureStore.open(other_store))
    msg = str(err.value)
    assert "teststore01" in msg and "otherstore02" in msg and "store-id" in msg


def test_checkpoint_refuses_other_feature_shapes(stan_run, wide_store):
    out, _ = stan_run
    with pytest.raises(StoreMismatchError, match=r"feature shapes .*visual 3×3×16.*visual 3×3×20"):
        load_run(out, store=FeatureStore.open(wide_store))


def test_resume_into_a_run_of_another_store_is_refused(stan_run, other_store):
    out, _ = stan_run
    with pytest.raises(StoreMismatchError, match="otherstore02"):
        train_head(_cfg(other_store, out, segment_loss_weight=0.5, head=SMALL.model_copy(update={"segment_head": True})))


def test_segment_loss_needs_segment_head(tiny_store, tmp_path):
    with pytest.raises(ValueError, match="segment_head"):
        _cfg(tiny_store, tmp_path, segment_loss_weight=1.0)


def test_a_small_training_split_takes_min_steps_and_early_stopping_waits_for_them(tiny_store, tmp_path):
    n_train = len(load_split(FeatureStore.open(tiny_store), "train"))
    steps_per_epoch = math.ceil(n_train / 8)
    min_steps = 4 * steps_per_epoch + 1  # reached in the 5th epoch
    assert epochs_to_run(2, min_steps, steps_per_epoch) == 5 and epochs_to_run(7, min_steps, steps_per_epoch) == 7
    # patience=1 would stop at the first epoch without a better val score; it may not before min_steps.
    summary = train_head(_cfg(tiny_store, tmp_path / "r", epochs=2, min_steps=min_steps, patience=1))
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert summary.epochs_run == len(lines) == 5
    total = 5 * steps_per_epoch  # the cosine spans the 5 epochs, not 2
    assert lines[-1]["lr"] == pytest.approx(lr_at(total - 1, total, steps_per_epoch, 3e-3, 0.01))
    # Without min_steps the same configuration stops after its 2 epochs.
    assert train_head(_cfg(tiny_store, tmp_path / "s", epochs=2, patience=1)).epochs_run <= 2


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_attention_warmup_falls_geometrically_from_its_start_to_the_heads_temperature():
    taus = [attention_temperature_at(s, 4.0, 0.25, 150) for s in range(200)]
    assert taus[0] == pytest.approx(4.0)
    assert taus[75] == pytest.approx(1.0)  # half-way: the geometric mean of 4 and 0.25
    assert all(a > b for a, b in zip(taus[:149], taus[1:150]))
    assert taus[149] == pytest.approx(4.0 * (0.25 / 4.0) ** (149 / 150))
    assert taus[150:] == [None] * 50  # after the warm-up: the head's own τ
    assert attention_temperature_at(0, None, 0.25, 150) is None
    assert attention_temperature_at(0, 4.0, 0.25, 0) is None


def test_training_follows_the_attention_warmup(tiny_store, tmp_path, monkeypatch):
    """The trainer hands the schedule's τ to the head at every step, and the head's own τ once it ends."""
    from stan_head.models.stan import STAN

    seen: list[float | None] = []
    forward = STAN.forward

    def recording(self, visual, audio, segment_mask, attention_temperature=None):
        if self.training:
            seen.append(attention_temperature)
        return forward(self, visual, audio, segment_mask, attention_temperature=attention_temperature)

    monkeypatch.setattr(STAN, "forward", recording)
    train_head(_cfg(tiny_store, tmp_path / "w", epochs=2, attention_warmup_temperature=2.0, attention_warmup_steps=3))
    assert len(seen) > 3
    assert seen[:3] == [pytest.approx(attention_temperature_at(s, 2.0, SMALL.attention_temperature, 3)) for s in range(3)]
    assert seen[3:] == [None] * (len(seen) - 3)


def test_a_soft_attention_warmup_changes_training_and_none_leaves_it_alone(tiny_store, tmp_path):
    """A warm-up from the head's own τ is no warm-up (same weights as none); a soft start trains differently."""
    runs = {
        name: load_file(str(train_head(_cfg(tiny_store, tmp_path / name, epochs=2, **kw)).run_dir / "last.safetensors"))
        for name, kw in {
            "none": dict(attention_warmup_steps=0),
            "same": dict(attention_warmup_temperature=SMALL.attention_temperature, attention_warmup_steps=50),
            "soft": dict(attention_warmup_temperature=4.0, attention_warmup_steps=50),
        }.items()
    }
    model = [k for k in runs["none"] if k.startswith("model.")]
    assert all(torch.allclose(runs["none"][k], runs["same"][k], atol=1e-6) for k in model)
    assert any(not torch.allclose(runs["none"][k], runs["soft"][k], atol=1e-4) for k in model)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_weights(tiny_store, tmp_path):
    epochs = 12
    reference = train_head(_cfg(tiny_store, tmp_path / "ref", epochs=epochs, patience=0))
    out = tmp_path / "killed"
    script = (
        "import sys; from pathlib import Path; from stan_head.train import TrainConfig, train_head; "
        "train_head(TrainConfig.model_validate_json(sys.argv[1]))"
    )
    cfg = _cfg(tiny_store, out, epochs=epochs, patience=0)
    proc = subprocess.Popen([sys.executable, "-c", script, cfg.model_dump_json()], env={**os.environ, "PYTHONPATH": os.getcwd()})
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        # an epoch's line is written just before its training state: 3 lines mean the state of epoch 2 is there
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < epochs, "the run was not interrupted mid-way"
    resumed = train_head(cfg)
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= 2
    ref_w, res_w = load_file(str(reference.run_dir / "last.safetensors")), load_file(str(out / "last.safetensors"))
    for k in ref_w:
        assert torch.equal(ref_w[k], res_w[k]), k
    lines = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert lines == list(range(1, epochs + 1))
    assert resumed.test_accuracy == reference.test_accuracy


class _Killed(BaseException):
    """Stands for a SIGKILL landing inside one of an epoch's two writes."""


@pytest.mark.parametrize("where", ["before the metrics line", "inside the metrics line", "before the training state"])
def test_a_kill_at_any_write_of_an_epoch_resumes_to_the_same_run(tiny_store, tmp_path, monkeypatch, where):
    """Each epoch writes a metrics line and ``last.safetensors``; a kill before, between or inside them
    must resume to the uninterrupted run's weights and one metrics line per epoch (the random-time kill
    above hits these windows only by chance)."""
    from stan_head import checkpoint

    epochs, killed_at = 5, 3
    reference = train_head(_cfg(tiny_store, tmp_path / "ref", epochs=epochs, patience=0))
    real_append, real_save = checkpoint.append_metrics, checkpoint.save_training_state

    def append(run_dir, record):
        if record["epoch"] == killed_at and where != "before the training state":
            if where == "inside the metrics line":
                with open(Path(run_dir) / checkpoint.METRICS, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record)[:20])
            raise _Killed
        real_append(run_dir, record)

    def save(run_dir, head, optimizer, loop):
        if loop["epoch"] == killed_at and where == "before the training state":
            raise _Killed
        return real_save(run_dir, head, optimizer, loop)

    cfg = _cfg(tiny_store, tmp_path / "killed", epochs=epochs, patience=0)
    monkeypatch.setattr(checkpoint, "append_metrics", append)
    monkeypatch.setattr(checkpoint, "save_training_state", save)
    with pytest.raises(_Killed):
        train_head(cfg)
    monkeypatch.setattr(checkpoint, "append_metrics", real_append)
    monkeypatch.setattr(checkpoint, "save_training_state", real_save)
    resumed = train_head(cfg)
    assert resumed.resumed_from_epoch == killed_at - 1
    ref_w, res_w = load_file(str(reference.run_dir / "last.safetensors")), load_file(str(cfg.out / "last.safetensors"))
    for k in ref_w:
        assert torch.equal(ref_w[k], res_w[k]), k
    lines = [json.loads(x)["epoch"] for x in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert lines == list(range(1, epochs + 1))


def test_trains_directly_from_ave_released_layout(tiny_store, tmp_path):
    from features.ave_interop import export_ave

    ave_dir = export_ave(FeatureStore.open(tiny_store), tmp_path / "ave")
    summary = train_head(_cfg(ave_dir, tmp_path / "run", epochs=10))
    assert summary.store_id.startswith("ave-")
    assert summary.test_accuracy is not None and summary.test_accuracy >= 0.75  # chance: 1/3
    run = load_run(summary.run_dir, store=FeatureStore.open(ave_dir))
    assert run.card.classes == ["class0", "class1", "class2"]
    with pytest.raises(StoreMismatchError, match="teststore01"):
        load_run(summary.run_dir, store=FeatureStore.open(tiny_store))


def _alpha_hits(run_dir: Path, store_dir: Path) -> float:
    """Fraction of (clip, event segment) pairs whose α argmax is the cell holding the class pattern."""
    store = FeatureStore.open(store_dir)
    run = load_run(run_dir, store=store)
    fb = store.read(range(len(store)))
    with torch.inference_mode():
        alpha = run.head(torch.from_numpy(fb.visual).float(), torch.from_numpy(fb.audio).float(),
                         torch.from_numpy(fb.segment_mask)).alpha
    boxes = store.boxes
    rows = boxes["clip_id"].map({c: i for i, c in enumerate(fb.clip_id)}).to_numpy()
    h, w = alpha.shape[2:]
    cell = (boxes["y0"].to_numpy() * h).round().astype(int) * w + (boxes["x0"].to_numpy() * w).round().astype(int)
    segments = torch.from_numpy(boxes["segment"].to_numpy(dtype=np.int64, copy=True))
    peak = alpha[torch.from_numpy(rows.astype(np.int64)), segments].flatten(1).argmax(1).numpy()
    return float((peak == cell).mean())


def test_stan_alpha_finds_the_sounding_region(tiny_store, tmp_path):
    """α (where) must point at the region carrying the class pattern far above chance (1/9 here).

    The pattern fills one cell; on a 3×3 grid every cell is in the centre's neighbourhood, so the
    neighbourhood pooling (made for CNN maps that spread an object over 2-4 cells) is off here.
    """
    head = SMALL.model_copy(update={"attention_neighbourhood": 0.0})
    summary = train_head(_cfg(tiny_store, tmp_path / "stan", epochs=30, head=head))
    assert summary.best_epoch > 10, "ties in val accuracy are broken by val loss, so training goes on"
    assert _alpha_hits(summary.run_dir, tiny_store) > 0.3


_HEAD_STEP = """
from pathlib import Path
from stan_head.evaluation.evaluate import EvaluateConfig, evaluate_run
from stan_head.models import HeadOptions
from stan_head.train import TrainConfig, train_head

store, out = Path(sys.argv[2]), Path(sys.argv[3])
if sys.argv[1] == "train":
    train_head(TrainConfig(store=store, out=out, epochs=1, min_steps=0, num_threads=1, progress=False,
                           head=HeadOptions(d_model=16, attn_dim=8, hidden_dim=16, lstm_hidden=8)))
else:
    evaluate_run(EvaluateConfig(run=out, store=store, out=Path(sys.argv[4]), explainers=("attention",), overlays=0,
                                device="cpu"))
"""


@pytest.mark.parametrize("step", ["train", "evaluate"])
def test_training_and_evaluation_take_large_batch_tensors_from_the_heap_not_fresh_pages(step, stan_run, tiny_store,
                                                                                       tmp_path):
    """Above glibc's own largest mmap threshold (32 MiB) every buffer is a fresh mmap that the kernel zeroes
    on first touch: STAN's cell tensors at batch 16 are 82 MB, Grad-CAM's batches of 32 clips 164 MB. After
    train_head or evaluate_run has run, a process's buffers of that size (96 MB here) reuse heap pages
    (features.malloc.raise_malloc_thresholds, 1 GiB)."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    run = tmp_path / "run" if step == "train" else stan_run[0]
    before, after = faults_around(_HEAD_STEP, [step, str(tiny_store), str(run), str(tmp_path / "report")], 96 << 20)
    assert_fresh_then_reused(before, after, 96 << 20)
