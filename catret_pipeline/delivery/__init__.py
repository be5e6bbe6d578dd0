"""Batch deliverables of the pipeline for serving: the serving model and category pages."""
