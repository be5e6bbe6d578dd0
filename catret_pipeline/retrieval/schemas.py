"""Table schemas and shared constants of the retrieval domain (declared once, used by every
asset and row builder that writes them)."""

import polars as pl

#: Every query gets at least this many results (the deepest cut-off among P@k / mAP@k).
MIN_DEPTH = 10

#: ``retrieval_runs`` (and ``hybrid_runs``, which it includes).
RUN_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "query": pl.String,
    "rank": pl.Int32,
    "asin": pl.String,
    "score": pl.Float32,
    "search": pl.String,
}
