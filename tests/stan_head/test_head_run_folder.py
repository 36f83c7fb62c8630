"""The run folder contract (stan_head.checkpoint): file names, metrics.jsonl, resume checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.store import FeatureStore
from stan_head import checkpoint
from stan_head.checkpoint import RunCard
from stan_head.models import HeadConfig


def test_metrics_append_read_and_truncate(tmp_path: Path):
    assert checkpoint.read_metrics(tmp_path) == []
    for epoch in (1, 2, 3):
        checkpoint.append_metrics(tmp_path, {"epoch": epoch, "val_accuracy": epoch / 10})
    assert [r["epoch"] for r in checkpoint.read_metrics(tmp_path)] == [1, 2, 3]
    assert (tmp_path / checkpoint.METRICS).name == "metrics.jsonl"
    checkpoint.truncate_metrics(tmp_path, 2)
    assert checkpoint.read_metrics(tmp_path) == [{"epoch": 1, "val_accuracy": 0.1}, {"epoch": 2, "val_accuracy": 0.2}]
    checkpoint.clear_training_files(tmp_path)
    assert checkpoint.read_metrics(tmp_path) == []


def test_metrics_leave_out_a_cut_last_line_and_refuse_a_bad_line_elsewhere(tmp_path: Path):
    for epoch in (1, 2):
        checkpoint.append_metrics(tmp_path, {"epoch": epoch})
    path = tmp_path / checkpoint.METRICS
    path.write_text(path.read_text() + '{"epoch": 3, "val_ac')  # a kill inside the third append
    assert [r["epoch"] for r in checkpoint.read_metrics(tmp_path)] == [1, 2]
    checkpoint.truncate_metrics(tmp_path, 5)
    assert path.read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2 is not a JSON record"):
        checkpoint.read_metrics(tmp_path)


def test_run_files_name_the_card_and_best_weights(tmp_path: Path):
    assert [p.name for p in checkpoint.run_files(tmp_path)] == ["run.json", "model.safetensors"]


def test_resume_check_names_the_option_that_differs(tiny_store: Path, tmp_path: Path):
    store = FeatureStore.open(tiny_store)
    head = HeadConfig(model="stan", num_classes=len(store.card.classes), visual_dim=16, audio_dim=8)
    card = RunCard.for_store(head, {"lr": 1e-3, "epochs": 5, "out": "a"}, store)
    assert card.store_id == store.card.store_id and card.visual_shape == (3, 3, 16)
    same = card.model_copy(update={"train_config": {"lr": 1e-3, "epochs": 9, "out": "b"}})
    checkpoint.check_resumable(card, same, tmp_path, free={"epochs", "out"})
    other = card.model_copy(update={"train_config": {"lr": 2e-3, "epochs": 5, "out": "a"}})
    with pytest.raises(ValueError, match=r"lr: 0\.001 in the run, 0\.002 now.*--out.*--no-resume"):
        checkpoint.check_resumable(card, other, tmp_path, free={"epochs", "out"})
    with pytest.raises(ValueError, match="head"):
        checkpoint.check_resumable(card, card.model_copy(update={"head": head.model_copy(update={"model": "ave_att"})}),
                                   tmp_path)


def test_a_run_card_written_before_attention_passes_loads_as_the_one_pass_stan_it_trained(tiny_store: Path,
                                                                                          tmp_path: Path):
    import json

    store = FeatureStore.open(tiny_store)
    head = HeadConfig(model="stan", num_classes=len(store.card.classes), visual_dim=16, audio_dim=8)
    assert head.attention_passes == 2  # what a new run gets
    card = RunCard.for_store(head, {"lr": 1e-3}, store)
    checkpoint.write_run_card(tmp_path, card)
    assert checkpoint.read_run_card(tmp_path).head.attention_passes == 2
    old = json.loads((tmp_path / checkpoint.RUN_CARD).read_text())
    del old["head"]["attention_passes"]
    (tmp_path / checkpoint.RUN_CARD).write_text(json.dumps(old))
    assert checkpoint.read_run_card(tmp_path).head.attention_passes == 1


def test_weights_of_another_head_version_are_refused_in_one_line(tmp_path: Path):
    """A run trained by an older STAN (other tensor names) or saved with other sizes: a ValueError naming
    the file and what differs, not torch's multi-line state-dict error."""
    import torch

    from stan_head.models import build_head

    head = build_head(HeadConfig(model="stan", num_classes=3, visual_dim=8, audio_dim=4))
    tensors = {k: v.clone() for k, v in head.state_dict().items()}
    tensors.pop("region_classifier.1.weight")
    tensors["spatial.w.weight"] = torch.zeros(1, 32)  # the additive scorer of the old STAN
    tensors["audio_classifier.bias"] = torch.zeros(5)
    path = tmp_path / checkpoint.BEST_WEIGHTS
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with pytest.raises(ValueError) as exc:
        checkpoint.load_weights(path, head)
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and "wherewhen train" in text
    assert "missing: region_classifier.1.weight" in text and "not in this head: spatial.w.weight" in text
    assert "other shape: audio_classifier.bias" in text
    checkpoint.save_weights(path, head, {})  # its own weights load
    checkpoint.load_weights(path, head)
