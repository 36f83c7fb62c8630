"""The heads: STAN and its baselines behind one interface (``Head.forward -> HeadOutput``)."""

from __future__ import annotations

from stan_head.models.ave_att import AVEAtt
from stan_head.models.base import Head, HeadConfig, HeadOptions, HeadOutput, ModelName
from stan_head.models.late_fusion import LateFusion
from stan_head.models.stan import STAN

HEADS: dict[str, type[Head]] = {"stan": STAN, "late_fusion": LateFusion, "ave_att": AVEAtt}


def build_head(config: HeadConfig) -> Head:
    """Instantiate the head named by ``config.model`` (weights freshly initialised by torch's RNG)."""
    return HEADS[config.model](config)


__all__ = ["AVEAtt", "HEADS", "Head", "HeadConfig", "HeadOptions", "HeadOutput", "LateFusion", "ModelName", "STAN", "build_head"]
