"""stan_head.evaluation package."""
