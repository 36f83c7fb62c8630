"""Checks and advice on a stage's inputs, shared by the command line and the flows.

Each stage may have a ``before`` check (raises ValueError with a one-line, actionable message
for an input that cannot work; returns warnings for one that is only unusual) and an ``after``
note on its result. :func:`flows.stage.run_stage` and the flows run them, so a deployment run
and a command say the same. The argument helpers (:func:`store_folder`) are the command line's:
they turn what a person typed into what the library takes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

__all__ = ["is_dataset", "store_folder", "video_problem", "before_extract", "before_train", "before_evaluate",
           "before_explain", "require_video", "after_build", "SMALL_SPLIT"]

log = logging.getLogger(__name__)

#: Fewer test clips than this make the evaluation's means too noisy to compare explainers.
SMALL_SPLIT = 20
_DATASET_CARD = "dataset.json"  # pipelines.manifest.write_dataset writes it last


def is_dataset(path: Path) -> bool:
    """True for a built dataset folder (``dataset build`` output)."""
    return (Path(path) / _DATASET_CARD).is_file()


def _not_a_store(path: Path) -> ValueError:
    return ValueError(
        f"{path}: a dataset folder, not a feature store; extract its features first with "
        f"`wherewhen extract-features {path} --out features` and pass the store folder it prints "
        f"(features/<dataset>/<store-id>, or features/<dataset> when it holds one store)")


def store_folder(path: Path) -> Path:
    """The store ``path`` names: the store itself, or the one store under ``features/<dataset>``.

    A folder that is neither a store nor a parent of stores is returned as it is (the library opens
    other layouts, such as AVE's published features, and says what is wrong). Raises ValueError for
    a dataset folder and for a folder holding several stores (naming them).
    """
    from features.store import CARD_FILE

    path = Path(path)
    if (path / CARD_FILE).is_file():
        return path
    if is_dataset(path):
        raise _not_a_store(path)
    stores = sorted(p.parent for p in path.glob(f"*/{CARD_FILE}"))
    if len(stores) == 1:
        log.info("%s holds one store: %s", path, stores[0])
        return stores[0]
    if stores:
        names = ", ".join(p.name for p in stores)
        raise ValueError(f"{path}: holds {len(stores)} feature stores ({names}); pass one of them, "
                         f"e.g. {stores[0]} (`wherewhen features info` shows what each holds)")
    return path


def _is_store(path: Path) -> bool:
    from features.store import CARD_FILE

    return (Path(path) / CARD_FILE).is_file()


def _require_run(run: Path) -> None:
    """Refuse a folder that holds no trained run (before any warning about the other inputs)."""
    from stan_head.checkpoint import RUN_CARD

    if not (Path(run) / RUN_CARD).is_file():
        what = "no such folder" if not Path(run).exists() else f"not a run folder (no {RUN_CARD})"
        raise ValueError(f"{run}: {what}; pass the folder `wherewhen train STORE --out RUN` wrote")


def before_extract(config: Any) -> list[str]:
    """Refuse a feature store given as the dataset."""
    if _is_store(config.dataset_dir):
        raise ValueError(f"{config.dataset_dir}: a feature store, not a dataset; extract-features reads a dataset "
                         f"folder (`wherewhen dataset build ... --out DIR`); a store is what `train` and `evaluate` read")
    return []


def _store_card(store: Path) -> dict[str, Any] | None:
    from features.store import CARD_FILE

    card = Path(store) / CARD_FILE
    return json.loads(card.read_text(encoding="utf-8")) if card.is_file() else None


def before_train(config: Any) -> list[str]:
    """Refuse a dataset given as the store, and a store with fewer than two classes."""
    if is_dataset(config.store):
        raise _not_a_store(config.store)
    card = _store_card(config.store)
    if card is not None and len(card.get("classes", [])) < 2:
        raise ValueError(f"{config.store}: the dataset has {len(card.get('classes', []))} class(es) "
                         f"{card.get('classes', [])}; a classifier needs at least two: add clips of another "
                         f"class, rebuild the dataset and extract again")
    return []


def before_evaluate(config: Any) -> list[str]:
    """Refuse a folder that is not a run, a dataset given as the store, and a store the run was not trained
    on (before any warning); warn about a tiny split and a split without boxes; estimate STEP's time when
    it is asked for."""
    import pandas as pd

    from features.store import BOXES_FILE, INDEX_FILE, FeatureStore
    from flows.defaults import STEP_SECONDS_PER_ITERATION
    from stan_head.checkpoint import check_store, read_run_card

    _require_run(config.run)
    if is_dataset(config.store):
        raise _not_a_store(config.store)
    check_store(read_run_card(config.run), FeatureStore.open(config.store), config.run)
    index_path = Path(config.store) / INDEX_FILE
    if not index_path.is_file():
        return []
    index = pd.read_parquet(index_path, columns=["clip_id", "split"])
    clips = index.loc[index["split"] == config.split, "clip_id"]
    n = min(len(clips), config.max_clips or len(clips))
    notes: list[str] = []
    if 0 < n < SMALL_SPLIT:
        notes.append(f"{config.store}: only {n} clip(s) in split {config.split!r}; the scores are means over "
                     f"{n} clip(s), too few to tell explainers apart (aim for {SMALL_SPLIT}+)")
    boxes_path = Path(config.store) / BOXES_FILE
    boxed = set(pd.read_parquet(boxes_path, columns=["clip_id"])["clip_id"]) if boxes_path.is_file() else set()
    if n and not boxed.intersection(clips):
        notes.append(f"{config.store}: no boxes for split {config.split!r}; the pointing game (where) is n/a "
                     f"and only when and deletion/insertion are scored (boxes come from the dataset's boxes.csv)")
    if "step" in config.explainers or "step_pixel" in config.explainers:
        m = min(n, config.step_max_clips or n)
        seconds = m * config.step_iterations * STEP_SECONDS_PER_ITERATION
        took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
        notes.append(f"STEP on {m} clip(s) x {config.step_iterations} steps: about {took} on a 2-core "
                     f"CPU (less on a GPU); leave step out of --explainers for a fast report")
    return notes


def video_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a video (missing, empty, text), from its first bytes; None when it may be one."""
    from pipelines.media.diagnose import sniff_file

    code = sniff_file(Path(path))
    return {
        "missing_file": "no such file",
        "empty_file": "an empty file (0 bytes)",
        "not_video": "not a video file (no video container signature; it reads as text)",
    }.get(code or "")


def require_video(path: Path) -> None:
    """Refuse a file that cannot be a video (from its first bytes; no decoder, no torch). Raises ValueError."""
    problem = video_problem(path)
    if problem:
        raise ValueError(f"{path}: {problem}; give explain a video file (mp4, mkv, webm, avi, mov)")


def before_explain(config: Any) -> list[str]:
    """Refuse a file that is not a video, and a folder that is not a run, before the model is loaded."""
    require_video(config.video)
    _require_run(config.run)
    return []


def after_build(config: Any, summary: Any) -> list[str]:
    """Say once when clips are longer than the default segmentation reads (their tail is not used)."""
    import pyarrow.parquet as pq

    from pipelines.segments import SegmentSpec

    manifest = Path(summary.out) / "manifest.parquet"
    if not manifest.is_file():
        return []
    spec = SegmentSpec()
    span = spec.num_segments * spec.segment_s
    durations = pq.read_table(manifest, columns=["duration_s"]).column("duration_s").to_pylist()
    longer = [d for d in durations if d > span + 1e-6]
    if not longer:
        return []
    whole = math.ceil(max(longer) / spec.segment_s - 1e-9)
    return [f"{summary.out}: {len(longer)} of {len(durations)} clip(s) are longer than {span:g} s (up to "
            f"{max(longer):.1f} s); extraction reads {spec.num_segments} segments of {spec.segment_s:g} s from the "
            f"start, so the rest is not used (shorter clips are padded); `wherewhen extract-features "
            f"--segment-num-segments {whole}` reads them whole"]
