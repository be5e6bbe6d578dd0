"""The category tree and the evaluation settings and splits built on it (see docs/data.md)."""
