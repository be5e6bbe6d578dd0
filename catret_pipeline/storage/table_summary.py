"""A table's run summary kept inside its own Parquet file (footer key ``catret.summary``).

Some values a materialisation reports are needed again later by code, not only by people in
the UI: the merge of sharded embeddings sums its shards' encoded / reused / dropped / failed
counts, and ``catret search`` needs the CLIP prompt ``category_clip_embeddings`` was built
with. Reading them back from the Dagster event log ties the data to one instance's history
(a different ``DAGSTER_HOME``, a wiped instance or a run outside Dagster loses them) and to the
*latest* event rather than the file actually read. Written into the file they travel with the
rows, atomically (one write), and DuckDB can read them too
(``SELECT * FROM parquet_kv_metadata('<file>')``).

An asset opts in by naming the fields in its definition metadata (:func:`summary_fields`);
the Parquet IO manager then copies those entries of the run's output metadata into the file.
Nothing else goes into the footer, so other tables stay byte-for-byte as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from catret_pipeline.storage.tables import TablePath

#: Definition-metadata key listing the output-metadata entries an asset keeps in its file.
SUMMARY_FIELDS = "catret/summary_fields"

#: Parquet footer (key-value metadata) key of the summary, a JSON object.
FOOTER_KEY = b"catret.summary"

Scalar = int | float | str


def summary_fields(*names: str) -> dict[str, list[str]]:
    """Definition metadata for ``@dg.asset(metadata=...)``: keep ``names`` in the file."""
    return {SUMMARY_FIELDS: list(names)}


def _plain(value: object) -> Scalar | None:
    # Dagster wraps output metadata (IntMetadataValue, TextMetadataValue, MarkdownMetadataValue,
    # ...); all the ones worth keeping expose the Python value as ``.value``.
    raw = getattr(value, "value", value)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    return raw


def wanted_summary(definition: Mapping, output: Mapping) -> dict[str, Scalar]:
    """The entries of ``output`` (a run's output metadata) that ``definition`` (the asset's
    definition metadata) names under :data:`SUMMARY_FIELDS`; non-scalar values are skipped."""
    names = definition.get(SUMMARY_FIELDS) or []
    names = getattr(names, "value", names)  # a JsonMetadataValue once normalised by Dagster
    out: dict[str, Scalar] = {}
    for name in names:
        if name in output:
            value = _plain(output[name])
            if value is not None:
                out[name] = value
    return out


def with_summary(table: pa.Table, summary: Mapping[str, Scalar]) -> pa.Table:
    """``table`` whose schema metadata also holds ``summary`` (unchanged when it is empty)."""
    if not summary:
        return table
    meta = dict(table.schema.metadata or {})
    meta[FOOTER_KEY] = json.dumps(dict(summary), sort_keys=True).encode("utf-8")
    return table.replace_schema_metadata(meta)


def read_summary(path: TablePath) -> dict[str, Scalar]:
    """The summary stored in the Parquet file at ``path`` (only the footer is read); ``{}``
    for a file written without one."""
    with path.open("rb") as fh:
        meta = pq.read_schema(fh).metadata or {}
    raw = meta.get(FOOTER_KEY)
    return json.loads(raw) if raw else {}
