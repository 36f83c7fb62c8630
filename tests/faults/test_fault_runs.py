"""Run folders (issue 15): a changed configuration is refused, NaN weights are refused, bytes are deterministic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from stan_head import checkpoint
from stan_head.models import HeadConfig, HeadOptions, build_head
from stan_head.train import TrainConfig, train_head

SMALL = HeadOptions(d_model=16, attn_dim=8, hidden_dim=16, lstm_hidden=8, dropout=0.1)


def _head_store_module():
    """tests/stan_head/head_store.py (the real small feature store the head tests use)."""
    if "head_store" in sys.modules:
        return sys.modules["head_store"]
    path = Path(__file__).resolve().parents[1] / "stan_head" / "head_store.py"
    spec = importlib.util.spec_from_file_location("head_store", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["head_store"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _head_store_module().make_feature_store(tmp_path_factory.mktemp("fault_store"), clips=30)


def _cfg(store: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(store=store, out=out, head=SMALL, epochs=2, min_steps=0, batch_size=8, lr=3e-3, num_threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_rerun_with_other_epochs_is_refused_naming_the_difference(store: Path, tmp_path: Path) -> None:
    """Expected: ValueError naming epochs and both values; the finished run is left as it was."""
    out = tmp_path / "run"
    train_head(_cfg(store, out, epochs=2))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for change, words in (({"epochs": 4}, "epochs: 2 in the run, 4 now"), ({"patience": 1}, "patience: 8 in the run, 1 now"),
                          ({"head": SMALL.model_copy(update={"d_model": 8})}, "d_model")):
        with pytest.raises(ValueError) as exc:
            train_head(_cfg(store, out, **change))
        assert words in str(exc.value) and str(out) in str(exc.value) and "--out" in str(exc.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the same configuration resumes (nothing left to do), and resume=False starts the folder over
    assert train_head(_cfg(store, out, epochs=2)).resumed_from_epoch == 2
    assert train_head(_cfg(store, out, epochs=3, resume=False)).epochs_run == 3


def test_same_tensors_give_the_same_safetensors_bytes(tmp_path: Path) -> None:
    """Expected: 20 saves of one head with many metadata keys give one set of bytes, readable by safetensors."""
    torch.manual_seed(0)
    head = build_head(HeadConfig(model="stan", num_classes=3, visual_dim=16, audio_dim=8))
    meta = {f"key{i}": str(i) for i in range(12)}
    blobs = {checkpoint.safetensors_bytes(head.state_dict(), dict(reversed(meta.items())) if i % 2 else meta) for i in range(20)}
    assert len(blobs) == 1
    path = checkpoint.save_weights(tmp_path / "w.safetensors", head, meta)
    assert path.read_bytes() in blobs
    other = build_head(HeadConfig(model="stan", num_classes=3, visual_dim=16, audio_dim=8))
    checkpoint.load_weights(path, other)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused_on_load(bad: float, store: Path, tmp_path: Path) -> None:
    """Expected: load_run raises ValueError naming the file and the tensor; no head is returned."""
    out = tmp_path / "run"
    train_head(_cfg(store, out, epochs=1))
    run = checkpoint.load_run(out)
    state = run.head.state_dict()
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name].view(-1)[0] = bad
    checkpoint.save_best(out, run.head, run.card.store_id, 1)
    with pytest.raises(ValueError) as exc:
        checkpoint.load_run(out)
    assert str(out / checkpoint.BEST_WEIGHTS) in str(exc.value) and name in str(exc.value) and "NaN or infinite" in str(exc.value)
