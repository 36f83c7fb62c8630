"""Run folders: weights as safetensors, everything else as JSON — nothing is unpickled on load.

A run folder holds
    run.json            the run card (:class:`RunCard`): head config, training config, store-id,
                        the store card (so ``explain`` can rebuild the frozen extractors), feature
                        shapes, classes, best epoch and headline metrics;
    model.safetensors   the best weights (by validation accuracy);
    last.safetensors    the latest epoch's model + optimizer tensors, with the loop state (epoch,
                        early-stopping counters, optimizer hyper-parameters) as JSON in the
                        safetensors metadata — one atomic file, so a crash never leaves a
                        checkpoint whose halves disagree;
    metrics.jsonl       one JSON line per epoch (:func:`append_metrics`, :func:`read_metrics`).

This module is the one owner of that layout: the file names are its constants, and every read
or write of a run folder goes through its functions. :func:`load_run` refuses a run whose
store-id or feature shapes differ from the store it is used with, naming both, before any
tensor is touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from features.store import FeatureStore
from pipelines.atomic import atomic_write_bytes, atomic_write_text
from pipelines.runtime import code_version
from stan_head.models import Head, HeadConfig, build_head

log = logging.getLogger(__name__)

RUN_CARD = "run.json"
BEST_WEIGHTS = "model.safetensors"
LAST_STATE = "last.safetensors"
METRICS = "metrics.jsonl"
FORMAT_VERSION = 1
#: What a finished run folder holds (what a cache of a training step checks for).
FINISHED_RUN_FILES = (RUN_CARD, BEST_WEIGHTS)


class StoreMismatchError(ValueError):
    """A run is being used with a feature store it was not trained on."""


class RunCard(BaseModel):
    """``run.json``: what was trained, on which store, and how well it did."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    head: HeadConfig
    train_config: dict[str, Any]
    store_id: str
    store_dir: str
    store_card: dict[str, Any]
    num_segments: int
    visual_shape: tuple[int, int, int]  # (H, W, Cv)
    audio_dim: int
    classes: list[str]
    best_epoch: int | None = None
    metrics: dict[str, float | int | None] = {}
    code_version: str = ""

    @field_validator("head", mode="before")
    @classmethod
    def _single_pass_before_the_field(cls, head: Any) -> Any:
        """A card written before ``attention_passes`` existed is a one-pass STAN's: load it as one."""
        if isinstance(head, dict) and "attention_passes" not in head:
            return {**head, "attention_passes": 1}
        return head

    @classmethod
    def for_store(cls, head: HeadConfig, train_config: dict[str, Any], store: FeatureStore) -> "RunCard":
        """The card of a run of ``head`` trained with ``train_config`` (JSON dump) on ``store``."""
        card = store.card
        return cls(
            head=head,
            train_config=train_config,
            store_id=str(card.store_id),
            store_dir=str(Path(store.path).resolve()),
            store_card=card.model_dump(mode="json"),
            num_segments=int(card.num_segments),
            visual_shape=tuple(int(x) for x in card.visual_shape),  # type: ignore[arg-type]
            audio_dim=int(card.audio_dim),
            classes=list(card.classes),
            code_version=code_version(),
        )

    def shapes_line(self) -> str:
        """Human-readable feature shapes, e.g. 'T=10, visual 7×7×1280, audio 128'."""
        h, w, c = self.visual_shape
        return f"T={self.num_segments}, visual {h}×{w}×{c}, audio {self.audio_dim}"


@dataclass
class LoadedRun:
    """A run folder loaded for inference: its card and the head with the best weights (eval mode)."""

    run_dir: Path
    card: RunCard
    head: Head


def write_run_card(run_dir: Path, card: RunCard) -> Path:
    """Write ``run.json`` atomically."""
    return atomic_write_text(Path(run_dir) / RUN_CARD, card.model_dump_json(indent=2) + "\n")


def read_run_card(run_dir: Path) -> RunCard:
    """Read and validate ``run.json``; a missing or malformed card is a clear error naming the file."""
    path = Path(run_dir) / RUN_CARD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run card — is {run_dir} a run folder written by `wherewhen train`?")
    try:
        return RunCard.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid run card: {exc}") from exc


def run_files(run_dir: Path | str) -> list[Path]:
    """The files a finished run folder holds: the run card and the best weights."""
    return [Path(run_dir) / name for name in FINISHED_RUN_FILES]


def _store_shapes(store: FeatureStore) -> tuple[int, tuple[int, int, int], int]:
    card = store.card
    return int(card.num_segments), tuple(int(x) for x in card.visual_shape), int(card.audio_dim)  # type: ignore[return-value]


def check_store(card: RunCard, store: FeatureStore, run_dir: Path | str = "run") -> None:
    """Raise :class:`StoreMismatchError` unless ``store`` (a ``FeatureStore``) is the one the run was trained on.

    Both the store-id and the feature shapes (T, H×W×Cv, Ca) and the class list must match.
    """
    t, vshape, adim = _store_shapes(store)
    store_id = str(store.card.store_id)
    classes = list(store.card.classes)
    h, w, c = vshape
    theirs = f"T={t}, visual {h}×{w}×{c}, audio {adim}"
    problems = []
    if store_id != card.store_id:
        problems.append(f"store-id {card.store_id} (run) ≠ {store_id} (store)")
    if (t, vshape, adim) != (card.num_segments, tuple(card.visual_shape), card.audio_dim):
        problems.append(f"feature shapes {card.shapes_line()} (run) ≠ {theirs} (store)")
    if classes != list(card.classes):
        problems.append(f"classes {card.classes} (run) ≠ {classes} (store)")
    if problems:
        raise StoreMismatchError(
            f"run {run_dir} was trained on store {card.store_id} ({card.store_dir}, {card.shapes_line()}) and cannot "
            f"be used with store {store_id} ({store.path}, {theirs}): "
            + "; ".join(problems)
        )


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes with a canonical header: equal tensors and metadata give equal bytes.

    The safetensors library writes the metadata in hash-map order, which varies between processes;
    the header is re-serialised here with sorted keys (the tensor data and its offsets are unchanged)
    and padded with spaces to 8 bytes, as the format requires.
    """
    raw = safetensors_save(_contiguous(tensors), metadata=metadata or {})
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + n :]


def save_weights(path: Path, head: Head, metadata: dict[str, str] | None = None) -> Path:
    """Write the head's state dict to ``path`` as safetensors (atomically, deterministic bytes)."""
    return atomic_write_bytes(path, safetensors_bytes(head.state_dict(), metadata))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; ValueError when a tensor holds NaN or infinity."""
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        metadata = fh.metadata() or {}
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items() if v.is_floating_point() or v.is_complex()}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        first = ", ".join(f"{k} ({n} of {tensors[k].numel()})" for k, n in sorted(bad.items())[:3])
        raise ValueError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinite values: {first}{', ...' if len(bad) > 3 else ''}; "
            "the training diverged or the file is damaged: retrain the run (e.g. with a lower lr) instead of using it"
        )
    return tensors, metadata


def load_weights(path: Path, head: Head) -> None:
    """Load safetensors weights into ``head`` (strict: every tensor name and shape must match).

    Weights that do not fit (a run trained by another version of the head, e.g. STAN before its
    attention became audio-visual agreement) raise ValueError naming the file and what differs.
    """
    tensors, _ = _read_safetensors(path)
    expected = head.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or reshaped:
        def some(names: list[str]) -> str:
            return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        what = "; ".join(f"{label}: {some(names)}" for label, names in
                         (("missing", missing), ("not in this head", unexpected), ("other shape", reshaped)) if names)
        raise ValueError(f"{path}: these weights do not fit this version's {type(head).__name__} head ({what}); "
                         "the run was trained by another version of the head: train it again with `wherewhen train`")
    head.load_state_dict(tensors, strict=True)


def save_best(run_dir: Path, head: Head, store_id: str, epoch: int) -> Path:
    """Write ``model.safetensors`` (the weights kept as the run's best), tagged with store-id and epoch."""
    return save_weights(Path(run_dir) / BEST_WEIGHTS, head, {"store_id": store_id, "epoch": str(epoch)})


def has_best(run_dir: Path) -> bool:
    """Whether the run folder holds best weights yet."""
    return (Path(run_dir) / BEST_WEIGHTS).is_file()


def load_best(run_dir: Path, head: Head) -> None:
    """Load ``model.safetensors`` into ``head`` (strict)."""
    load_weights(Path(run_dir) / BEST_WEIGHTS, head)


def load_run(run_dir: Path, store: FeatureStore | None = None, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run folder for inference.

    When ``store`` (a ``features.store.FeatureStore``) is given, the run must have been trained on it:
    a different store-id, feature shapes or class list raises :class:`StoreMismatchError` naming both.
    """
    run_dir = Path(run_dir)
    card = read_run_card(run_dir)
    if store is not None:
        check_store(card, store, run_dir)
    weights = run_dir / BEST_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: the run has no best weights yet (training never finished an epoch)")
    head = build_head(card.head)
    load_weights(weights, head)
    head.to(device).eval()
    return LoadedRun(run_dir=run_dir, card=card, head=head)


# ----------------------------------------------------------------------------------------------
# metrics.jsonl: one JSON object per finished epoch.


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record (it must carry ``epoch``) to ``metrics.jsonl``."""
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl`` in order ([] when there is none yet).

    A last line without its newline that is not valid JSON is a record a kill cut short while it
    was appended: it is left out. Any other line that is not valid JSON raises ValueError naming
    the file and the line.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise ValueError(f"{path}: line {number} is not a JSON record ({exc})") from exc
    return records


def truncate_metrics(run_dir: Path, upto_epoch: int) -> None:
    """Keep only the whole records of epochs ≤ ``upto_epoch`` (a kill may have left a later or a cut line)."""
    path = Path(run_dir) / METRICS
    if path.exists():
        kept = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= upto_epoch]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


# ----------------------------------------------------------------------------------------------
# Starting or resuming a run.


def has_training_state(run_dir: Path) -> bool:
    """Whether the run folder holds a ``last.safetensors`` to resume from."""
    return (Path(run_dir) / LAST_STATE).is_file()


def clear_training_files(run_dir: Path) -> None:
    """Remove the training state, best weights and metrics: the folder starts a run afresh."""
    for name in (LAST_STATE, BEST_WEIGHTS, METRICS):
        (Path(run_dir) / name).unlink(missing_ok=True)


def check_resumable(previous: RunCard, current: RunCard, run_dir: Path, free: Collection[str] = ()) -> None:
    """Raise ValueError unless ``current`` may resume the run ``previous`` describes.

    The head and every training option except those in ``free`` (options that cannot change the
    result, such as the output folder or the device) must be the same. The message names each
    difference with both values.
    """
    mine = {k: v for k, v in current.train_config.items() if k not in free}
    theirs = {k: v for k, v in previous.train_config.items() if k not in free}
    diffs = [f"{k}: {theirs.get(k)!r} in the run, {mine.get(k)!r} now"
             for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    old_head, new_head = previous.head.model_dump(mode="json"), current.head.model_dump(mode="json")
    diffs += [f"head.{k}: {old_head.get(k)!r} in the run, {new_head.get(k)!r} now"
              for k in sorted(set(old_head) | set(new_head)) if old_head.get(k) != new_head.get(k)]
    if diffs:
        raise ValueError(
            f"{run_dir} holds a run with another configuration, which resuming would mix into it ({'; '.join(diffs)}); "
            "give another --out for the new run, or start this folder over (--no-resume; TrainConfig resume=False)"
        )


# ----------------------------------------------------------------------------------------------
# Training state for resume: model + optimizer tensors, loop state as JSON metadata.


def save_training_state(run_dir: Path, head: Head, optimizer: torch.optim.Optimizer, loop_state: dict[str, Any]) -> Path:
    """Write ``last.safetensors``: model weights, optimizer moments and the JSON loop state, atomically."""
    tensors = {f"model.{k}": v for k, v in head.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    metadata = {
        "format_version": str(FORMAT_VERSION),
        "loop_state": json.dumps(loop_state),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    return atomic_write_bytes(Path(run_dir) / LAST_STATE, safetensors_bytes(tensors, metadata))


def load_training_state(run_dir: Path, head: Head, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore ``last.safetensors`` into ``head`` and ``optimizer``; return the loop state (None if absent)."""
    path = Path(run_dir) / LAST_STATE
    if not path.is_file():
        return None
    tensors, metadata = _read_safetensors(path)
    try:
        loop_state = json.loads(metadata["loop_state"])
        param_groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata.get("optim_scalars", "{}"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a training checkpoint written by stan_head ({exc})") from exc
    head.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, extra in scalars.items():
        state.setdefault(int(idx), {}).update(extra)
    for group in param_groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    log.info("resumed %s at epoch %s", path, loop_state.get("epoch"))
    return loop_state
