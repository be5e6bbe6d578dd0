"""Evaluation: ranking metrics, error analysis and significance tests over retrieval runs."""
