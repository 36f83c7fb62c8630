"""stan_head.models package."""
