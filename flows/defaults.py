"""Figures the command line uses to talk to the person at the terminal, in one place."""

from __future__ import annotations

__all__ = ["STEP_SECONDS_PER_ITERATION"]

#: STEP's cost on one clip per optimisation step on a 2-core CPU (168 s for 300 steps, issue 16),
#: for the estimate printed before it starts; a GPU is much faster, so the estimate is an upper bound there.
STEP_SECONDS_PER_ITERATION = 0.56
