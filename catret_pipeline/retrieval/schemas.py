"""Table schemas and shared constants of the retrieval domain, declared once: the row builders
and the frames of every asset that writes these tables are built from them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

#: Every query gets at least this many results (the deepest cut-off among P@k / mAP@k).
MIN_DEPTH = 10

#: The k of ``recall_at_10`` (table column, check and ef tuning).
RECALL_K = 10

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

#: ``hnsw_indexes``: one row per (vector model, setting). ``seed``, ``recall_bound`` and
#: ``recall_sample_queries`` are the settings the row's index was built and accepted with: the
#: ``hnsw_recall`` check reads them from here.
INDEX_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "n_items": pl.Int64,
    "n_missing_vectors": pl.Int64,
    "dim": pl.Int64,
    "M": pl.Int64,
    "ef_construction": pl.Int64,
    "ef": pl.Int64,
    "seed": pl.Int64,
    "index_path": pl.String,
    "labels_path": pl.String,
    "bytes": pl.Int64,
    "build_seconds": pl.Float64,
    "recall_at_10": pl.Float64,
    "recall_bound": pl.Float64,
    "recall_sample_queries": pl.Int64,
    "action": pl.String,
    "reason": pl.String,
    "n_added": pl.Int64,
    "n_removed": pl.Int64,
    "n_changed": pl.Int64,
}

#: ``hnsw_indexes`` columns that record the acceptance settings (read by ``hnsw_recall``).
ACCEPTANCE_COLUMNS = ("recall_bound", "recall_sample_queries", "seed")

#: The per-(model, setting) summary in ``retrieval_runs``' metadata.
SUMMARY_COLUMNS = {
    "model": pl.String,
    "setting": pl.String,
    "n_queries": pl.Int64,
    "answered": pl.Int64,
    "hnsw": pl.Int64,
    "exact": pl.Int64,
    "no_vector": pl.Int64,
    "rows": pl.Int64,
    "note": pl.String,
}

#: Per-query search counts of a summary row (``search`` values and queries without a vector).
SEARCH_COUNTS = ("hnsw", "exact", "no_vector")


def _row(schema: dict, values: dict) -> dict:
    unknown = set(values) - set(schema)
    if unknown:
        raise KeyError(f"not columns of the table: {sorted(unknown)}")
    return {c: values.get(c) for c in schema}


def new_index_row(model: str, setting: str, **values) -> dict:
    """An ``hnsw_indexes`` row with every column of :data:`INDEX_COLUMNS`; unset ones null."""
    return _row(INDEX_COLUMNS, {"model": model, "setting": setting, **values})


def new_summary_row(model: str, setting: str, n_queries: int, **values) -> dict:
    """A :data:`SUMMARY_COLUMNS` row; the search counts start at 0, ``answered`` at their
    ``hnsw + exact``."""
    row = _row(SUMMARY_COLUMNS, {**dict.fromkeys(SEARCH_COUNTS, 0), **values})
    row |= {"model": model, "setting": setting, "n_queries": n_queries}
    if "answered" not in values:
        row["answered"] = row["hnsw"] + row["exact"]
    return row


def frame(rows: Iterable[dict], schema: dict) -> pl.DataFrame:
    """The table of ``rows`` (dicts of the schema's columns), typed and ordered by ``schema``."""
    return pl.DataFrame(list(rows), schema=schema)


def _as_list(values) -> list:
    # numpy arrays to Python scalars, as polars builds the columns from them
    return values.tolist() if hasattr(values, "tolist") else list(values)


class RunRows:
    """A :data:`RUN_COLUMNS` table filled one ranked list at a time."""

    def __init__(self) -> None:
        self._columns: dict[str, list] = {c: [] for c in RUN_COLUMNS}

    def __len__(self) -> int:
        return len(self._columns["asin"])

    def add(
        self,
        model: str,
        setting: str,
        query: str,
        asins: Sequence[str],
        scores: Sequence[float],
        search: str,
    ) -> int:
        """Append one list, best first (rank 1..n); returns n."""
        n = len(asins)
        if len(scores) != n:
            raise ValueError(f"{n} asins but {len(scores)} scores")
        cols = self._columns
        cols["model"].extend([model] * n)
        cols["setting"].extend([setting] * n)
        cols["query"].extend([query] * n)
        cols["rank"].extend(range(1, n + 1))
        cols["asin"].extend(_as_list(asins))
        cols["score"].extend(_as_list(scores))
        cols["search"].extend([search] * n)
        return n

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self._columns, schema=RUN_COLUMNS)
