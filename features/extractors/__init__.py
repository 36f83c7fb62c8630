"""features.extractors package."""
