"""The synthetic source's configuration (:class:`SyntheticSource`) and its resolved parameters.

A ``preset`` (:data:`pipelines.sources.synthetic_presets.PRESETS`) fills every field the caller
did not give; explicit fields win. :attr:`SyntheticSource.resolved` turns the fields into
concrete rendering parameters (:class:`RenderParams`: frame width and height, event-length and
scale ranges with their defaults filled in).

An ``easy`` source serialises exactly as the source did before presets existed (the new fields
are left out while they hold their defaults), so the build parameters, ``synthetic.json`` and
the fingerprints of existing datasets do not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from pipelines.sources.synthetic_catalog import CLASS_CATALOG, GROUP_SIZE
from pipelines.sources.synthetic_presets import EASY_MIN_SNR_DB, PRESETS

__all__ = ["BackgroundKind", "PresetName", "RenderParams", "SyntheticSource"]

PresetName = Literal["easy", "hard", "heldout_wide", "heldout_clutter"]
BackgroundKind = Literal["gradient", "texture", "noise", "moving"]

# the fields the source had before presets; an easy source dumps only these
_ORIGINAL_FIELDS = frozenset({"kind", "clips", "classes", "seed", "duration_s", "size", "fps", "audio_rate",
                              "min_event_s", "offscreen_fraction", "crf"})


@dataclass(frozen=True)
class RenderParams:
    """The concrete rendering parameters of a :class:`SyntheticSource` (ranges are inclusive)."""

    preset: str
    width: int
    height: int
    fps: int
    audio_rate: int
    background: str
    scale: tuple[float, float]  # sounding object's side / the frame's short side
    distractor_scale: tuple[float, float]
    distractors: tuple[int, int]
    event_s: tuple[int, int]
    snr_db: tuple[float, float]
    occlusion_fraction: float
    offscreen_fraction: float
    shared_sounds: bool

    @property
    def aspect(self) -> float:
        """width / height."""
        return self.width / self.height


class SyntheticSource(BaseModel):
    """Configuration of the synthetic source (``wherewhen dataset build synthetic``).

    Use ``SyntheticSource(**fields)`` (not ``model_copy(update=...)``) to change the preset, so
    that the preset fills the fields again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["synthetic"] = "synthetic"
    preset: PresetName = Field("easy", description=(
        "parameter set filling every field not given: easy (each class its own sound), hard (vision "
        "needed), heldout_wide / heldout_clutter (evaluation only: never tune on them); the defaults "
        "shown for the other fields are easy's"))
    clips: int = Field(60, ge=1, description="number of clips")
    classes: int = Field(8, ge=2, le=len(CLASS_CATALOG), description="K classes")
    seed: int = 0
    duration_s: int = Field(10, ge=3, description="clip length in whole seconds (1-s segments)")
    size: int = Field(160, ge=64, description=(
        "frame side in pixels (even); given without width and height it makes a square frame under any preset"))
    width: int | None = Field(None, ge=32, description="frame width in pixels (even); None: size (set by the preset)")
    height: int | None = Field(None, ge=32, description="frame height in pixels (even); None: size (set by the preset)")
    fps: int = Field(10, ge=2, le=30, description="frames per second (set by the preset)")
    audio_rate: int = Field(16000, ge=8000, description="audio sample rate in Hz, mono (set by the preset)")
    background: BackgroundKind = Field("gradient", description=(
        "gradient: smooth colour field + light pixel noise; texture: it times a static striped "
        "pattern; noise: static blotches + heavy pixel noise; moving: drifting stripes (set by the preset)"))
    min_scale: float = Field(0.28, gt=0, le=0.6, description="smallest sounding-object side / frame short side")
    max_scale: float = Field(0.35, gt=0, le=0.6, description="largest sounding-object side / frame short side")
    min_distractor_scale: float | None = Field(0.20, gt=0, le=0.6, description=(
        "smallest distractor side / frame short side; None: the sounding object's range"))
    max_distractor_scale: float | None = Field(0.27, gt=0, le=0.6, description=(
        "largest distractor side / frame short side; None: the sounding object's range"))
    min_distractors: int = Field(1, ge=0, le=len(CLASS_CATALOG) - 1, description="fewest silent distractors per clip")
    max_distractors: int = Field(2, ge=0, le=len(CLASS_CATALOG) - 1, description=(
        "most silent distractors per clip (at most the classes outside the sounding object's group)"))
    min_event_s: int = Field(3, ge=1, description="shortest event in whole seconds")
    max_event_s: int | None = Field(None, ge=1, description="longest event in whole seconds; None: max(min_event_s, duration_s - 2)")
    min_snr_db: float = Field(EASY_MIN_SNR_DB, description="quietest event: 20·log10(event RMS / noise-floor RMS) in dB")
    max_snr_db: float = Field(20.0, description="loudest event, in dB over the noise floor")
    occlusion_fraction: float = Field(0.0, ge=0, le=1, description="fraction of clips where an occluder bar crosses the frame during the event")
    offscreen_fraction: float = Field(0.2, ge=0, le=1, description="fraction of clips where the sounding object leaves the frame for part of the event")
    shared_sounds: bool = Field(False, description=(
        "pairs of classes share one sound family, so the sound names the pair and only the visible "
        "object names the class (the 'vision needed' switch; needs an even number of classes >= 4)"))
    crf: int = Field(23, ge=0, le=51)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        values = PRESETS.get(data.get("preset", "easy"))
        if values is None:
            return data  # the preset field's own validation names the bad value
        given = dict(data)
        if "size" in given:  # a square frame of that side, unless width/height are given too
            given.setdefault("width", None)
            given.setdefault("height", None)
        return {**values, **given}

    @model_validator(mode="after")
    def _check(self) -> SyntheticSource:
        for name, value in (("size", self.size), ("width", self.width), ("height", self.height)):
            if value is not None and value % 2:
                raise ValueError(f"{name} must be even for h264, got {value}")
        if self.min_event_s > self.duration_s:
            raise ValueError(f"min_event_s={self.min_event_s} exceeds duration_s={self.duration_s}")
        if self.max_event_s is not None and not self.min_event_s <= self.max_event_s <= self.duration_s:
            raise ValueError(f"need min_event_s <= max_event_s <= duration_s, got {self.min_event_s}, "
                             f"{self.max_event_s}, {self.duration_s}")
        if (self.min_distractor_scale is None) != (self.max_distractor_scale is None):
            raise ValueError("set both min_distractor_scale and max_distractor_scale, or neither")
        pairs = (("scale", self.min_scale, self.max_scale),
                 ("distractor_scale", self.min_distractor_scale, self.max_distractor_scale),
                 ("distractors", self.min_distractors, self.max_distractors),
                 ("snr_db", self.min_snr_db, self.max_snr_db))
        for name, lo, hi in pairs:
            if lo is not None and lo > hi:
                raise ValueError(f"min_{name}={lo} exceeds max_{name}={hi}")
        if self.shared_sounds and (self.classes % GROUP_SIZE or self.classes < 2 * GROUP_SIZE):
            raise ValueError(f"shared_sounds needs an even number of classes >= {2 * GROUP_SIZE}, got {self.classes}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.preset == "easy":  # the pre-preset form: new fields only where they differ from their defaults
            fields = type(self).model_fields
            data = {k: v for k, v in data.items()
                    if k in _ORIGINAL_FIELDS or getattr(self, k) != fields[k].default}
        return data

    @property
    def resolved(self) -> RenderParams:
        """The concrete rendering parameters (None fields filled in)."""
        scale = (self.min_scale, self.max_scale)
        longest = self.max_event_s if self.max_event_s is not None else max(self.min_event_s, self.duration_s - 2)
        return RenderParams(
            preset=self.preset,
            width=self.width if self.width is not None else self.size,
            height=self.height if self.height is not None else self.size,
            fps=self.fps,
            audio_rate=self.audio_rate,
            background=self.background,
            scale=scale,
            distractor_scale=(scale if self.min_distractor_scale is None
                              else (self.min_distractor_scale, float(self.max_distractor_scale))),  # type: ignore[arg-type]
            distractors=(self.min_distractors, self.max_distractors),
            event_s=(self.min_event_s, longest),
            snr_db=(self.min_snr_db, self.max_snr_db),
            occlusion_fraction=self.occlusion_fraction,
            offscreen_fraction=self.offscreen_fraction,
            shared_sounds=self.shared_sounds,
        )
