"""pipelines.sources package."""
