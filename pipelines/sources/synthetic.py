"""A seeded generator of audio-visual event clips, written in contract 1's folder layout.

Each of K classes (default 8) is a visible object kind with its own shape, colour and texture
(:data:`CLASS_CATALOG`), and a sound with a distinct spectral signature (chord, chirp, noise
band, click train, AM tone, buzz, FM warble, beeps). In every clip (10 s, AVE style 10 × 1-s
segments):

- the sounding object moves slowly inside the frame; its box is known for every segment;
- it sounds during a known interval [start_s, end_s) of whole seconds;
- silent distractor objects of other classes share the frame;
- the background has visual texture + per-frame noise, the audio a white noise floor;
- in some clips the sounding object is off-screen for part of the event, or an occluder bar
  crosses it (no box there).

Where both modalities are needed (``shared_sounds``, the ``hard`` and held-out presets):

- classes come in pairs (0, 1), (2, 3), … and both members of a pair make the same sound (the
  pair's first member's), so the **sound names the pair, never the class**;
- the silent distractors are drawn only from **other** pairs — never the sounding object's
  pair-mate, which would leave nothing to tell the two apart — and are as large as the sounding
  object, so the **scene alone does not say which object sounds**;
- together they name the class: the sounding pair (audio) has exactly one member in view (vision).

Presets (``preset``: ``easy`` = the generator as it always was, ``hard``, ``heldout_wide``,
``heldout_clutter``) fill every parameter not given; see :mod:`pipelines.sources.synthetic_presets`.

**NEVER TUNE ON THE HELD-OUT PRESETS** (``heldout_wide``, ``heldout_clutter``): they measure
whether what was developed on ``hard`` generalises, and stop measuring it once anything is chosen
by their scores.

Output (``root`` is the dataset folder): ``videos/<video_id>.mp4`` (h264 + AAC mono, encoded
with :data:`pipelines.encode.ENCODER_SETTING`, byte-identical on every x86-64 CPU),
``annotations.csv`` (video_id,label,start_s,end_s — no split column: the build assigns a
seeded class-stratified split, exactly as for a user's folder) and ``boxes.csv``
(video_id,segment,x0,y0,x1,y1 in pixels of the width × height frame). Same seed and parameters →
byte-identical files, for any number of workers.

The work is split by job: :mod:`~pipelines.sources.synthetic_catalog` (classes, shapes,
textures, sounds), :mod:`~pipelines.sources.synthetic_config` (:class:`SyntheticSource`),
:mod:`~pipelines.sources.synthetic_presets`, :mod:`~pipelines.sources.synthetic_plan` (one clip's
plan and boxes), :mod:`~pipelines.sources.synthetic_render` (pixels, samples, encoding) and this
module (the dataset folder).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from pathlib import Path

from pipelines.atomic import atomic_write_text
from pipelines.encode import ENCODER_SETTING
from pipelines.lifetime import exit_with_parent
from pipelines.sources.synthetic_catalog import CLASS_CATALOG, ObjectKind
from pipelines.sources.synthetic_config import RenderParams, SyntheticSource
from pipelines.sources.synthetic_plan import (
    ClipPlan,
    clip_boxes,
    clip_labels,
    plan_clip,
)
from pipelines.sources.synthetic_presets import HELD_OUT_PRESETS, PRESETS
from pipelines.sources.synthetic_render import render_clip, render_media

__all__ = [
    "CLASS_CATALOG",
    "HELD_OUT_PRESETS",
    "PRESETS",
    "ClipPlan",
    "ObjectKind",
    "RenderParams",
    "SyntheticResult",
    "SyntheticSource",
    "clip_boxes",
    "clip_labels",
    "generate_synthetic",
    "plan_clip",
    "render_clip",
    "render_media",
]

log = logging.getLogger(__name__)



def _render_job(args: tuple[dict, ClipPlan, str]) -> str:
    cfg_dict, plan, path = args
    render_clip(SyntheticSource(**cfg_dict), plan, Path(path))
    return plan.video_id


@dataclass(frozen=True)
class SyntheticResult:
    """What :func:`generate_synthetic` wrote."""

    root: Path
    classes: list[str]
    rendered: int  # clips encoded in this call
    reused: int  # clips already present from an earlier identical run


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def generate_synthetic(cfg: SyntheticSource, root: Path, workers: int = 1) -> SyntheticResult:
    """Write contract 1 for ``cfg`` into ``root`` (videos/, annotations.csv, boxes.csv).

    Resumable: a clip already written by an earlier run with the same parameters and encoder
    setting (recorded in ``synthetic.json``) is kept, so a crashed generation continues where it stopped. Videos are
    encoded in a process pool of ``workers`` processes (spawn) when ``workers > 1`` and there
    are at least 8 clips to encode.
    """
    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    params_path = root / "synthetic.json"
    # the encoder setting is part of what the files depend on: another setting re-renders every clip
    params = json.dumps({**cfg.model_dump(), "encoder": ENCODER_SETTING}, sort_keys=True, indent=2) + "\n"
    same = params_path.is_file() and params_path.read_text(encoding="utf-8") == params
    if not same:
        for old in videos.glob("syn*.mp4"):
            old.unlink()
    atomic_write_text(params_path, params)

    labels = clip_labels(cfg)
    plans = [plan_clip(cfg, i, int(labels[i])) for i in range(cfg.clips)]
    todo = [p for p in plans if not (videos / f"{p.video_id}.mp4").is_file()]
    jobs = [(cfg.model_dump(), p, str(videos / f"{p.video_id}.mp4")) for p in todo]
    if workers > 1 and len(jobs) > 1 and current_process().daemon:
        log.info("running inside a daemonic process (e.g. a Dask worker): encoding %d clips in-process", len(jobs))
        workers = 1
    log.info("synthetic: %d of %d clips to encode in %s (%d already there)", len(jobs), len(plans), videos,
             len(plans) - len(jobs))
    if workers > 1 and len(jobs) >= 8:  # below that, starting interpreters costs more than it saves
        # each encoder process ends itself when this one dies (a SIGKILLed build leaves no encoders,
        # so the resource tracker ends too and removes the pool's semaphores)
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            for vid in pool.map(_render_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                log.debug("rendered %s", vid)
    else:
        for job in jobs:
            _render_job(job)

    classes = [k.name for k in CLASS_CATALOG[: cfg.classes]]
    ann = [[p.video_id, classes[p.label], p.start_s, p.end_s] for p in plans]
    atomic_write_text(root / "annotations.csv", _csv_text(["video_id", "label", "start_s", "end_s"], ann))
    boxes = [[p.video_id, *row] for p in plans for row in clip_boxes(cfg, p)]
    atomic_write_text(root / "boxes.csv", _csv_text(["video_id", "segment", "x0", "y0", "x1", "y1"], boxes))
    log.info("synthetic: %d clips in %s (%d rendered, %d reused)", len(plans), root, len(todo), len(plans) - len(todo))
    return SyntheticResult(root=root, classes=classes, rendered=len(todo), reused=len(plans) - len(todo))
