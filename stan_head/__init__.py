"""stan_head package."""
