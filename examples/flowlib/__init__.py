"""Helpers for the example flow files in ``examples/*.toml`` (python steps import them)."""
