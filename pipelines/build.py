"""``build_dataset(BuildConfig) -> BuildSummary``: the one entry the build flow calls.

A source (one of :data:`SOURCES`, the registry in :mod:`pipelines.sources.registry`) yields
candidate clips in contract-1 terms; this module probes each with decord (in killable child
processes, ``workers`` at once), hashes it, assigns labels and (where the source gives none) a
seeded class-stratified split, and writes contract 2 (manifest.parquet, failures.parquet, boxes.parquet, dataset.json).
A bad file never stops the build: it becomes a failure row with a reason a person can act on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.encode import encoder_identity
from pipelines.manifest import BoxRecord, ClipRecord, FailureRecord, write_dataset
from pipelines.media import ClipDecoder, MediaError, MediaInfo
from pipelines.runtime import file_sha256
from pipelines.sources.base import Candidate
from pipelines.sources.registry import SOURCES, DatasetSource, SourceConfig, source_entry

__all__ = [
    "BuildConfig", "BuildSummary", "build_dataset", "assign_splits", "SOURCES", "SourceConfig", "DatasetSource",
]

log = logging.getLogger(__name__)


class BuildConfig(BaseModel):
    """Configuration of one dataset build.

    Attributes:
        source: which source and its parameters: one of the models in :data:`SOURCES`, told apart by ``kind``.
        out: the dataset folder to write (contract 2; for synthetic also contract 1).
        strict: when True, any failure row makes the build count as failed (non-zero exit in the CLI).
        workers: how many files are probed at once (each by its own decord child process), and the
            parallelism of the source's own work (synthetic encoder processes, youtube-csv downloads).
        probe_timeout_s: seconds one probe may take before its decord process is killed.
        min_duration_s: the shortest usable clip (default one AVE segment, 1 s); a shorter one would
            be all padding once segmented and becomes a ``too_short`` failure row.
        split_seed: seed of the class-stratified split for clips whose source gives none.
        split_fractions: train/val/test fractions for that split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: SourceConfig
    out: Path
    strict: bool = False
    workers: int = Field(2, ge=1, le=64)
    probe_timeout_s: float = Field(60.0, gt=0)
    min_duration_s: float = Field(1.0, gt=0)
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {v}")
        return v


class BuildSummary(BaseModel):
    """What a build produced (small; no tensors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path
    name: str
    source: str
    clips: int
    failures: int
    strict: bool
    classes: list[str]
    split_counts: dict[str, int]
    class_counts: dict[str, int]
    failure_counts: dict[str, int]
    no_audio: int
    fingerprint: str
    seconds: float

    @property
    def ok(self) -> bool:
        """False when the build was strict and had failures."""
        return not (self.strict and self.failures > 0)

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1 (what ``wherewhen dataset build`` exits with)."""
        return 0 if self.ok else 1

    def summary_line(self) -> str:
        """One line for people: counts, splits, failures and where the dataset is."""
        splits = " / ".join(f"{k} {v}" for k, v in self.split_counts.items()) or "no clips"
        fails = ", ".join(f"{k} {v}" for k, v in self.failure_counts.items())
        return (
            f"{self.source} dataset {self.name!r}: {self.clips} clips ({splits}), {len(self.classes)} classes, "
            f"{self.no_audio} without audio, {self.failures} failures{f' ({fails})' if fails else ''}"
            f"{' [strict: FAILED]' if not self.ok else ''} -> {self.out} [fingerprint {self.fingerprint[:12]}] in {self.seconds:.1f} s"
        )


def assign_splits(clip_ids: list[str], labels: list[str], seed: int,
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """Seeded class-stratified split: {clip_id: train|val|test}.

    Per class (in sorted order), the clip ids are sorted, shuffled with a Generator seeded by
    (seed, class position) and cut by ``fractions``; a class with at least 3 clips gets at
    least one val and one test clip when those fractions are non-zero. Independent of input order.
    """
    by_class: dict[str, list[str]] = {}
    for cid, lab in zip(clip_ids, labels, strict=True):
        by_class.setdefault(lab, []).append(cid)
    out: dict[str, str] = {}
    for k, lab in enumerate(sorted(by_class)):
        ids = sorted(by_class[lab])
        rng = np.random.default_rng([seed, k])
        ids = [ids[i] for i in rng.permutation(len(ids))]
        n = len(ids)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val = max(n_val, 1 if fractions[1] > 0 else 0)
            n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_train = max(0, n - n_val - n_test)
        for i, cid in enumerate(ids):
            out[cid] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return out


class _ProbeCache:
    """Append-only JSON-lines cache of probe results, so a crashed build resumes without re-probing.

    Keyed by (absolute path, size, mtime_ns); a file that changed is probed again. A torn last
    line (a crash mid-write) is ignored. Lives in ``<out>/.cache/probe.jsonl``; never part of
    the manifest.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._entries[rec["key"]] = rec
                except (ValueError, KeyError):
                    continue
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @staticmethod
    def key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, path: Path) -> tuple[MediaInfo, str, int] | None:
        try:
            rec = self._entries.get(self.key(path))
        except OSError:
            return None
        if rec is None:
            return None
        return MediaInfo(**rec["info"]), rec["sha256"], int(rec["bytes"])

    def put(self, path: Path, info: MediaInfo, digest: str, size: int) -> None:
        line = json.dumps({"key": self.key(path), "info": info.model_dump(), "sha256": digest, "bytes": size})
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _probe_all(cands: list[Candidate], workers: int, timeout_s: float,
               cache: _ProbeCache | None = None) -> list[tuple[Candidate, MediaInfo | MediaError, str, int]]:
    """Probe + hash every candidate with ``workers`` threads, each owning one decord child."""
    local = threading.local()
    decoders: list[ClipDecoder] = []
    lock = threading.Lock()

    def work(c: Candidate) -> tuple[Candidate, MediaInfo | MediaError, str, int]:
        hit = cache.get(c.path) if cache is not None else None
        if hit is not None:
            return (c, *hit)
        dec = getattr(local, "dec", None)
        if dec is None:
            dec = local.dec = ClipDecoder(timeout_s=timeout_s)
            with lock:
                decoders.append(dec)
        try:
            info: MediaInfo | MediaError = dec.probe(c.path)
        except MediaError as exc:
            return c, exc, "", 0
        digest, size = file_sha256(c.path), c.path.stat().st_size
        if cache is not None:
            cache.put(c.path, info, digest, size)
        return c, info, digest, size

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(cands)))) as pool:
            return list(pool.map(work, cands))
    finally:
        for d in decoders:
            d.close()


#: An event may end this many seconds after the clip's last frame before a warning says so
#: (annotations in whole seconds, such as AVE's, often end at 10 on a 9.96-s clip).
EVENT_END_SLACK_S = 0.5


def _event_interval(cand: Candidate, info: MediaInfo, min_duration_s: float) -> tuple[float, float] | FailureRecord:
    """The clip's event interval in seconds, or the failure row that says why the clip cannot be used.

    An open end is the clip's end (an open start its beginning). Refused: a clip shorter than
    ``min_duration_s``, an event that starts at or after the clip's end, an interval that is empty or
    inverted once its open side is filled in. An event that ends past the clip is kept with a warning.
    """
    name, dur = cand.relpath, info.duration_s

    def fail(error: str, message: str, stage: str = "annotate") -> FailureRecord:
        return FailureRecord(clip_id=cand.clip_id, relpath=cand.relpath, stage=stage, error=error, message=message)

    if dur < min_duration_s:
        return fail("too_short", f"{name} lasts {dur:.3g} s ({info.num_frames} frame(s)), shorter than one "
                                 f"{min_duration_s:g}-s segment, so every segment would be padding; use the full-length "
                                 "video, or lower min_duration_s if short clips are intended", stage="probe")
    start = 0.0 if cand.event_start_s is None else float(cand.event_start_s)
    end = dur if cand.event_end_s is None else float(cand.event_end_s)
    given = f"start_s={cand.event_start_s}, end_s={cand.event_end_s if cand.event_end_s is not None else '(open: clip end)'}"
    if start >= dur:
        return fail("event_outside_clip", f"the event of {cand.clip_id} ({given}) starts at {start:g} s but {name} lasts "
                                          f"only {dur:.3g} s; fix the times (seconds from the clip's start) or the file")
    if not (0 <= start < end):
        return fail("bad_interval", f"the event of {cand.clip_id} ({given}) is the interval [{start:g}, {end:g}] s, "
                                    f"empty or inverted on a {dur:.3g}-s clip; need 0 <= start_s < end_s")
    if end > dur + EVENT_END_SLACK_S:
        log.warning("%s: the event of %s ends at %g s, %.3g s after the clip ends (%.3g s); kept, check the annotation",
                    name, cand.clip_id, end, end - dur, dur)
    return start, end


def build_dataset(config: BuildConfig) -> BuildSummary:
    """Build (or rebuild) the dataset described by ``config``; see the module docstring.

    Raises only for problems with the whole build (e.g. a missing annotations file, an
    unreachable archive URL, a checksum mismatch); per-clip problems become failure rows.
    """
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    source = source_entry(config.source)
    col = source.collect(config.source, out, config.workers)
    log.info("%s: %d candidate clips, %d failures before probing", col.source, len(col.candidates), len(col.failures))
    failures: list[FailureRecord] = list(col.failures)
    cache = _ProbeCache(out / ".cache" / "probe.jsonl")
    try:
        probed = _probe_all(col.candidates, config.workers, config.probe_timeout_s, cache)
    finally:
        cache.close()

    kept: list[tuple[Candidate, MediaInfo, str, int]] = []
    for cand, info, digest, size in probed:
        if isinstance(info, MediaError):
            failures.append(FailureRecord(clip_id=cand.clip_id, relpath=cand.relpath, stage="probe",
                                          error=info.error, message=info.message))
            log.warning("%s", info.message)
        else:
            kept.append((cand, info, digest, size))

    classes = list(col.classes) if col.classes else sorted(set(col.all_labels) | {c.label for c, *_ in kept})
    class_idx = {name: i for i, name in enumerate(classes)}
    need_split = [c for c, *_ in kept if c.split is None]
    auto = assign_splits([c.clip_id for c in need_split], [c.label for c in need_split],
                         config.split_seed, config.split_fractions)

    clips: list[ClipRecord] = []
    boxes: list[BoxRecord] = []
    for cand, info, digest, size in kept:
        if cand.label not in class_idx:
            failures.append(FailureRecord(clip_id=cand.clip_id, relpath=cand.relpath, stage="annotate", error="unknown_label",
                                          message=f"label {cand.label!r} of {cand.clip_id} is not one of the dataset's classes; fix the label"))
            continue
        interval = _event_interval(cand, info, config.min_duration_s)
        if isinstance(interval, FailureRecord):
            failures.append(interval)
            log.warning("%s", interval.message)
            continue
        start, end = interval
        clips.append(ClipRecord(
            clip_id=cand.clip_id, relpath=cand.relpath, sha256=digest, bytes=size,
            duration_s=info.duration_s, fps=info.fps, width=info.width, height=info.height,
            has_audio=info.has_audio, audio_sample_rate=info.audio_sample_rate,
            label=cand.label, label_idx=class_idx[cand.label], split=cand.split or auto[cand.clip_id],
            event_start_s=start, event_end_s=end, source=col.source,
        ))
        for b in col.boxes.get(cand.clip_id, []):
            boxes.append(BoxRecord(clip_id=cand.clip_id, segment=b.segment, x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1,
                                   width=info.width, height=info.height))

    build_params = {
        "source": config.source.model_dump(mode="json"),
        "split_seed": config.split_seed,
        "split_fractions": list(config.split_fractions),
        "min_duration_s": config.min_duration_s,
    }
    card = write_dataset(out, clips, failures, boxes, {
        "name": col.name, "source": col.source, "classes": classes,
        "media_root": col.media_root_card, "build": build_params, "fingerprint": "", "num_clips": 0, "num_failures": 0,
        "media_encoder": encoder_identity() if source.encodes_media else None,
    })
    class_counts: dict[str, int] = {}
    for c in clips:
        class_counts[c.label] = class_counts.get(c.label, 0) + 1
    failure_counts: dict[str, int] = {}
    for f in failures:
        failure_counts[f.error] = failure_counts.get(f.error, 0) + 1
    summary = BuildSummary(
        out=out, name=col.name, source=col.source, clips=len(clips), failures=len(failures), strict=config.strict,
        classes=classes, split_counts={k: card.split_counts.get(k, 0) for k in ("train", "val", "test")},
        class_counts=dict(sorted(class_counts.items())), failure_counts=dict(sorted(failure_counts.items())),
        no_audio=sum(not c.has_audio for c in clips), fingerprint=card.fingerprint,
        seconds=round(time.perf_counter() - t0, 3),
    )
    log.info("%s", summary.summary_line())
    return summary
