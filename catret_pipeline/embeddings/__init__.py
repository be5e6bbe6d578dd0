"""Incremental per-modality embedding tables (image, title, attributes, category names)."""
