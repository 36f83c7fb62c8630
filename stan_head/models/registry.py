"""The heads by name: one :class:`HeadSpec` per head, and everything that names a head derives from it.

``HEADS`` maps each name to its spec; ``HEAD_NAMES`` (in registration order, ``stan`` first)
gives the command line its choices, and ``HeadName`` (a ``Literal`` of those names built from
the registry) types the configuration fields and flow parameters that name a head. A new head
is one more entry in ``_SPECS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stan_head.models.ave_att import AVEAtt
from stan_head.models.base import Head, HeadOptions, HeadSizes
from stan_head.models.late_fusion import LateFusion
from stan_head.models.stan import STAN

__all__ = ["HEADS", "HEAD_NAMES", "HeadConfig", "HeadName", "HeadSpec", "build_head"]


@dataclass(frozen=True)
class HeadSpec:
    """One registered head: its name, its class and a line for help texts.

    Every head is built from :class:`HeadConfig` (the shared :class:`HeadOptions` plus the store's
    sizes); options a head does not use are ignored by it.
    """

    name: str
    head: type[Head]
    summary: str


_SPECS = (
    HeadSpec("stan", STAN, "space-time attention: audio-guided spatial α, temporal β^a and β^v"),
    HeadSpec("late_fusion", LateFusion, "baseline: mean-pooled features, no attention"),
    HeadSpec("ave_att", AVEAtt, "baseline: AVE's audio-guided visual attention + BiLSTMs"),
)

HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in _SPECS}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)
HeadName = Literal[HEAD_NAMES]  # type: ignore[valid-type]  # the registry's names, for pydantic, Prefect and click


class HeadConfig(HeadSizes):
    """Everything :func:`build_head` needs: the head's registered name, the options and the input sizes."""

    model: HeadName = "stan"

    @classmethod
    def from_options(
        cls, model: str, options: HeadOptions, *, num_classes: int, visual_dim: int, audio_dim: int
    ) -> "HeadConfig":
        """Combine user options with the sizes read from a feature store."""
        return cls(
            model=model, num_classes=num_classes, visual_dim=visual_dim, audio_dim=audio_dim, **options.model_dump()
        )


def build_head(config: HeadConfig) -> Head:
    """Instantiate the head named by ``config.model`` (weights freshly initialised by torch's RNG)."""
    return HEADS[config.model].head(config)
