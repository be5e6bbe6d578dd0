"""Per-modality embedding tables (group ``embeddings``), all incremental.

Each asset reads its own last good table (``storage.read_previous``), re-encodes only rows whose
``content_hash`` or the encoder's ``model_id`` changed, and drops rows of removed keys. While
encoding it writes checkpoint parts under ``checkpoints/<asset key>/`` so that a killed run
resumes where it stopped; the parts are removed once the asset finishes. torch / open_clip /
sentence_transformers load only when something has to be encoded.

With ``build_assets(shards)`` and ``shards > 1`` each product-level asset becomes ``shards``
hash-shard assets (``embedding_shards/<asset>/shard_<i>_of_<n>``, separate steps, so the
multiprocess or a cluster executor runs them side by side) and a merge under the original key;
see docs/scaling.md. Category tables are a few thousand rows and stay unsharded.
"""

import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from catret_pipeline.embeddings.incremental import (
    IncrementalPlan,
    combine,
    embedding_dim,
    encoded_frame,
    plan_incremental,
)
from catret_pipeline.embeddings.sharding import SHARD_GROUP, merge_shards, shard_mask, shard_name
from catret_pipeline.encoders.resources import OpenClipEncoder, TextEncoder
from catret_pipeline.markdown import frame_markdown, markdown_table
from catret_pipeline.storage.resources import CatretStorage

GROUP = "embeddings"
KINDS = {"pytorch", "parquet"}
DEFAULT_CATEGORY_PROMPT = "a photo of a {name}."

#: encode_chunk(rows, progress) -> (encoded rows, {row position in ``rows``: reason})
EncodeChunk = Callable[
    [pl.DataFrame, Callable[[int, int], None]], tuple[pl.DataFrame, dict[int, str]]
]


class EmbeddingConfig(dg.Config):
    chunk_rows: int = Field(
        default=2048, description="Rows encoded between checkpoint writes (resume granularity)."
    )
    log_every_batches: int = Field(default=10, description="Log progress every N encoder batches.")


class CategoryClipConfig(EmbeddingConfig):
    prompt: str = Field(
        default=DEFAULT_CATEGORY_PROMPT,
        description="CLIP zero-shot prompt; {name} is replaced by the category name.",
    )


def sha1_text(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _hash_column(values: list[str]) -> pl.Series:
    return pl.Series("content_hash", [sha1_text(v) for v in values], dtype=pl.String)


def shard_key(asset: str, shard: int, shards: int) -> dg.AssetKey:
    """``embedding_shards/<asset>/shard_<i>_of_<n>``: a folder per asset in the UI's catalogue and
    ``assets/embedding_shards/<asset>/`` on disk (no DuckDB view: not a contract table)."""
    return dg.AssetKey([SHARD_GROUP, asset, shard_name(shard, shards)])


# ---- shared incremental runner --------------------------------------------------------------


def _checkpoint_dir(storage: CatretStorage, key_path: Sequence[str]) -> Path:
    return storage.path("checkpoints", *key_path)


def _read_checkpoints(
    context, storage: CatretStorage, asset: str, key_path: Sequence[str]
) -> list[pl.DataFrame]:
    parts = []
    for f in sorted(_checkpoint_dir(storage, key_path).glob("part-*.parquet")):
        try:
            parts.append(pl.read_parquet(f))
        except Exception as exc:  # a damaged part only costs re-encoding its rows
            context.log.warning(f"{asset}: ignoring unreadable checkpoint {f.name}: {exc}")
    return parts


def _read_previous(
    context, storage: CatretStorage, key_path: Sequence[str]
) -> tuple[pl.DataFrame | None, str | None]:
    """The last good table and, when it was damaged, why it was not reused (for the metadata:
    an operator sees that a long re-encode was caused by a broken file, not by new data)."""
    try:
        return storage.read_previous(*key_path), None
    except Exception as exc:
        name = "/".join(key_path)
        context.log.warning(f"{name}: previous table unreadable, encoding everything: {exc}")
        return None, str(exc)


class _Progress:
    def __init__(self, context, asset: str, total: int, every: int):
        self.context, self.asset, self.total, self.every = context, asset, total, max(1, every)
        self.base = 0
        self.chunk_rows = 0
        self.batches = 0
        self.start = time.perf_counter()

    def callback(self, done: int, total: int) -> None:
        # Encoders count what they encode (unique strings, decodable images): scale to rows.
        self.batches += 1
        if self.batches % self.every == 0:
            self.log(self.base + round(self.chunk_rows * done / max(total, 1)))

    def log(self, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        self.context.log.info(f"{self.asset}: {done}/{self.total} rows encoded ({rate:.1f} rows/s)")


def run_incremental(
    context: dg.AssetExecutionContext,
    storage: CatretStorage,
    asset: str,
    current: pl.DataFrame,
    keys: list[str],
    model_id: str,
    encoder_dim: Callable[[], int],
    encode_chunk: EncodeChunk,
    config: EmbeddingConfig,
    extra: tuple[str, ...] = (),
    key_path: Sequence[str] | None = None,
    shared_previous: Callable[[pl.DataFrame], pl.DataFrame | None] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Plan, encode the stale rows in checkpointed chunks, combine; returns (table, metadata).

    ``asset`` names the table in logs; ``key_path`` (default ``(asset,)``) locates its previous
    table and checkpoint parts. ``shared_previous(keys)``, asked only for the keys that would
    otherwise be encoded, returns more reusable rows (a shard: its rows of the merged table).
    """
    key_path = tuple(key_path or (asset,))
    previous, previous_damage = _read_previous(context, storage, key_path)
    checkpoints = _read_checkpoints(context, storage, asset, key_path)
    plan: IncrementalPlan = plan_incremental(
        current, previous, keys, model_id, checkpoints=checkpoints
    )
    if plan.to_encode.height and shared_previous is not None:
        shared = shared_previous(plan.to_encode.select(keys))
        if shared is not None and shared.height:
            plan = plan_incremental(
                current, previous, keys, model_id, checkpoints=[shared, *checkpoints]
            )
    todo = plan.to_encode
    context.log.info(
        f"{asset}: {current.height} rows, {plan.reused.height} reusable, {todo.height} to encode, "
        f"{plan.dropped} dropped (model {model_id})"
    )
    if todo.height:
        encoder_dim()  # load the model first so that the logged rate is encoding speed alone
    progress = _Progress(context, asset, todo.height, config.log_every_batches)
    encoded_parts: list[pl.DataFrame] = []
    failures: dict[int, str] = {}
    if todo.height == 0 and plan.reused.height == 0:
        # Nothing at all: still build an (empty) frame through the encoder so dtypes are right.
        encoded_parts.append(encode_chunk(todo, progress.callback)[0])
    if todo.height:
        step = max(1, config.chunk_rows)
        for start in range(0, todo.height, step):
            chunk = todo.slice(start, step)
            progress.chunk_rows = chunk.height
            part, errs = encode_chunk(chunk, progress.callback)
            failures.update({start + i: e for i, e in errs.items()})
            encoded_parts.append(part)
            progress.base = start + chunk.height
            if start + step < todo.height and part.height:
                storage.write_table(
                    part, "checkpoints", *key_path, f"part-{time.time_ns()}.parquet"
                )
        progress.log(todo.height)
    encode_seconds = time.perf_counter() - progress.start
    if encoded_parts:
        encoded = pl.concat(encoded_parts, how="vertical_relaxed")
        dim = embedding_dim(encoded) or encoder_dim()
    else:
        dim = embedding_dim(plan.reused) or encoder_dim()
        encoded = pl.DataFrame()
    table, stats = combine(plan, encoded, dim, extra=extra)
    shutil.rmtree(_checkpoint_dir(storage, key_path), ignore_errors=True)
    meta = {
        "encoded": dg.MetadataValue.int(stats.encoded),
        "reused": dg.MetadataValue.int(stats.reused),
        "dropped": dg.MetadataValue.int(stats.dropped),
        "failed": dg.MetadataValue.int(len(failures)),
        "rate": dg.MetadataValue.float(
            round(stats.encoded / encode_seconds, 2) if stats.encoded else 0.0
        ),
        "model_id": dg.MetadataValue.text(model_id),
        "dim": dg.MetadataValue.int(dim),
    }
    if failures:
        rows = (
            todo.select(keys).with_row_index("__pos").filter(pl.col("__pos").is_in(list(failures)))
        )
        report = rows.with_columns(
            pl.col("__pos").replace_strict(failures, return_dtype=pl.String).alias("reason")
        ).drop("__pos")
        context.log.warning(
            f"{asset}: {len(failures)} rows could not be encoded and have no embedding"
        )
        meta["failures"] = dg.MetadataValue.md(frame_markdown(report, rows=20, max_chars=120))
    if previous_damage:
        meta["previous_unreadable"] = dg.MetadataValue.text(
            f"re-encoded every row: the previous table was not reused: {previous_damage}"
        )
    return table, meta


# ---- encode functions -------------------------------------------------------------------------


def _text_chunk(encode, texts_col: str, keys: list[str], model_id: str) -> EncodeChunk:
    def run(rows: pl.DataFrame, progress) -> tuple[pl.DataFrame, dict[int, str]]:
        texts = rows[texts_col].fill_null("").to_list()
        vectors = encode(texts, progress)
        return encoded_frame(rows, vectors, keys, model_id), {}

    return run


def _image_chunk(clip: OpenClipEncoder, storage: CatretStorage, model_id: str) -> EncodeChunk:
    def run(rows: pl.DataFrame, progress) -> tuple[pl.DataFrame, dict[int, str]]:
        paths, errors, pos = [], {}, []
        for i, rel in enumerate(rows["cache_path"].to_list()):
            if not rel:
                errors[i] = "no cache_path"
                continue
            try:
                p = storage.path(rel)
            except ValueError as exc:
                errors[i] = str(exc)
                continue
            if not p.is_file():
                errors[i] = f"cached image missing: {rel}"
                continue
            paths.append(p)
            pos.append(i)
        res = clip.encode_image_files(paths, progress=progress)
        for j, err in res.errors.items():
            errors[pos[j]] = err
        good = [pos[j] for j in np.flatnonzero(res.ok)]
        ok_rows = rows.with_row_index("__pos").filter(pl.col("__pos").is_in(good)).drop("__pos")
        return encoded_frame(ok_rows, res.embeddings[res.ok], ["asin"], model_id), errors

    return run


def pool_attributes(
    attributes: list[list[str] | None], encode: Callable[[list[str]], np.ndarray], dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of each product's attribute-string embeddings, re-normalised (the paper's h_a).

    Blank strings are ignored; a product with none gets a zero vector. Returns
    (vectors, has_attributes, n_attributes). Each distinct string is encoded once.
    """
    cleaned = [[a.strip() for a in (attrs or []) if a and a.strip()] for attrs in attributes]
    counts = np.array([len(c) for c in cleaned], dtype=np.int64)
    out = np.zeros((len(cleaned), dim), dtype=np.float32)
    flat = [a for c in cleaned for a in c]
    if flat:
        unique = list(dict.fromkeys(flat))
        index = {s: i for i, s in enumerate(unique)}
        vecs = encode(unique)
        gathered = vecs[[index[a] for a in flat]]
        nonempty = np.flatnonzero(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        sums = np.add.reduceat(gathered, offsets, axis=0)
        means = sums / counts[nonempty, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        out[nonempty] = means / np.maximum(norms, 1e-12)
    return out, counts > 0, counts


def _attribute_chunk(text_encoder: TextEncoder, model_id: str) -> EncodeChunk:
    def run(rows: pl.DataFrame, progress) -> tuple[pl.DataFrame, dict[int, str]]:
        model = text_encoder.model()
        vectors, has, counts = pool_attributes(
            rows["attributes"].to_list(),
            lambda texts: model.encode(
                texts, batch_size=text_encoder.batch_size, progress=progress
            ),
            model.dim,
        )
        rows = rows.with_columns(
            pl.Series("has_attributes", has, dtype=pl.Boolean),
            pl.Series("n_attributes", counts, dtype=pl.Int32),
        )
        frame = encoded_frame(
            rows, vectors, ["asin"], model_id, extra=("has_attributes", "n_attributes")
        )
        return frame, {}

    return run


def _output(table: pl.DataFrame, meta: dict) -> dg.Output:
    return dg.Output(table, metadata=meta)


# ---- product-level assets (optionally hash-sharded) ------------------------------------------

#: Current input of one product-level embedding: (context, products, product_images or None).
CurrentFn = Callable[..., pl.DataFrame]


@dataclass(frozen=True)
class ProductEmbedding:
    """One product-level embedding asset: its input rows, its encoder and its encode function."""

    name: str
    description: str
    encoder: str  # resource key: "clip" or "text_encoder"
    current: CurrentFn
    encode: Callable[[object, CatretStorage, str], EncodeChunk]  # (encoder, storage, model_id)
    needs_images: bool = False
    extra: tuple[str, ...] = ()
    finish: Callable[[pl.DataFrame, dict], None] | None = None  # table-derived metadata


def _image_current(context, products: pl.LazyFrame, product_images: pl.LazyFrame) -> pl.DataFrame:
    asins = products.select("asin")
    current = (
        product_images.filter(pl.col("status") == "ok")
        .join(asins, on="asin", how="semi")
        .select("asin", pl.col("sha256").alias("content_hash"), "cache_path")
        .collect()
    )
    dup = current["asin"].is_duplicated()
    if dup.any():
        context.log.warning(
            f"image_embeddings: {int(dup.sum())} duplicate ok image rows; keeping the first per asin"
        )
        current = current.unique(subset=["asin"], keep="first", maintain_order=True)
    return current


def _titles(context, products: pl.LazyFrame, product_images=None) -> pl.DataFrame:
    return products.select("asin", "title", pl.col("title_hash").alias("content_hash")).collect()


def _attributes_current(context, products: pl.LazyFrame, product_images=None) -> pl.DataFrame:
    return products.select(
        "asin", "attributes", pl.col("attributes_hash").alias("content_hash")
    ).collect()


def _attributes_finish(table: pl.DataFrame, meta: dict) -> None:
    meta["without_attributes"] = dg.MetadataValue.int(int((~table["has_attributes"]).sum()))


PRODUCT_EMBEDDINGS: tuple[ProductEmbedding, ...] = (
    ProductEmbedding(
        name="image_embeddings",
        description="CLIP image-tower embedding per product with an ok cached image (none otherwise).",
        encoder="clip",
        current=_image_current,
        encode=lambda clip, storage, model_id: _image_chunk(clip, storage, model_id),
        needs_images=True,
    ),
    ProductEmbedding(
        name="title_embeddings",
        description="Sentence-encoder (MiniLM / MPNet) embedding of each product title.",
        encoder="text_encoder",
        current=_titles,
        encode=lambda enc, storage, model_id: _text_chunk(enc.encode, "title", ["asin"], model_id),
    ),
    ProductEmbedding(
        name="title_clip_embeddings",
        description="CLIP text-tower embedding of each product title.",
        encoder="clip",
        current=_titles,
        encode=lambda clip, storage, model_id: _text_chunk(
            clip.encode_texts, "title", ["asin"], model_id
        ),
    ),
    ProductEmbedding(
        name="attribute_embeddings",
        description="Mean of the sentence-encoder embeddings of a product's attribute strings "
        "(re-normalised); zero vector and has_attributes=false when it has none.",
        encoder="text_encoder",
        current=_attributes_current,
        encode=lambda enc, storage, model_id: _attribute_chunk(enc, model_id),
        extra=("has_attributes", "n_attributes"),
        finish=_attributes_finish,
    ),
)


def _embed_products(
    spec: ProductEmbedding,
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    products: pl.LazyFrame,
    product_images: pl.LazyFrame | None,
    shard: tuple[int, int] | None,
) -> dg.Output:
    """One product-level embedding table, or the rows of one hash shard of it."""
    encoder = getattr(context.resources, spec.encoder)
    storage: CatretStorage = context.resources.storage
    current = spec.current(context, products, product_images)
    label, key_path, shared = spec.name, (spec.name,), None
    if shard is not None:
        index, count = shard
        current = current.filter(shard_mask(current["asin"], index, count))
        key_path = tuple(shard_key(spec.name, index, count).path)
        label = "/".join(key_path)

        def shared(wanted: pl.DataFrame) -> pl.DataFrame | None:
            # The merged table holds every shard's last rows, so a new shard count (or a shard
            # whose own table is older than the merge) re-encodes nothing that is unchanged.
            try:
                merged = storage.scan_asset(spec.name)  # local scan or a remote table store
                if merged is None:
                    return None
                rows = merged.join(wanted.lazy(), on="asin", how="semi")
                return rows.collect(engine="streaming")  # never the whole table in memory
            except Exception as exc:
                context.log.warning(f"{label}: merged table unreadable, not reusing it: {exc}")
                return None

    model_id = encoder.model_id
    table, meta = run_incremental(
        context,
        storage,
        label,
        current,
        ["asin"],
        model_id,
        lambda: encoder.dim,
        spec.encode(encoder, storage, model_id),
        config,
        extra=spec.extra,
        key_path=key_path,
        shared_previous=shared,
    )
    if shard is not None:
        meta["shard"] = dg.MetadataValue.text(f"{shard[0]} of {shard[1]}")
    if spec.finish is not None:
        spec.finish(table, meta)
    return _output(table, meta)


def _product_asset(
    spec: ProductEmbedding, shard: tuple[int, int] | None = None
) -> dg.AssetsDefinition:
    if shard is None:
        options = {"name": spec.name, "group_name": GROUP, "description": spec.description}
    else:
        options = {
            "key": shard_key(spec.name, *shard),
            "group_name": SHARD_GROUP,
            "description": f"Hash shard {shard[0]} of {shard[1]} of {spec.name} "
            f"(asins with sha1(asin) mod {shard[1]} == {shard[0]}). {spec.description}",
        }
    options |= {"kinds": KINDS, "required_resource_keys": {spec.encoder, "storage"}}
    if spec.needs_images:

        @dg.asset(**options)
        def with_images(
            context: dg.AssetExecutionContext,
            config: EmbeddingConfig,
            products: pl.LazyFrame,
            product_images: pl.LazyFrame,
        ) -> dg.Output:
            return _embed_products(spec, context, config, products, product_images, shard)

        return with_images

    @dg.asset(**options)
    def from_products(
        context: dg.AssetExecutionContext, config: EmbeddingConfig, products: pl.LazyFrame
    ) -> dg.Output:
        return _embed_products(spec, context, config, products, None, shard)

    return from_products


def _merge_metadata(context, keys: list[dg.AssetKey]) -> dict:
    """Encoded / reused / dropped / failed summed over the shards' latest materialisations."""
    totals = dict.fromkeys(("encoded", "reused", "dropped", "failed"), 0)
    rows, failures, model_ids = [], [], []
    for key in keys:
        event = context.instance.get_latest_materialization_event(key)
        meta = event.asset_materialization.metadata if event and event.asset_materialization else {}

        def value(name: str, default=0, meta=meta):
            entry = meta.get(name)
            return entry.value if entry is not None else default

        for name in totals:
            totals[name] += int(value(name))
        model_ids.append(value("model_id", ""))
        shard = key.path[-1]
        rows.append([shard, *(value(n) for n in (*totals, "rate"))])
        if "failures" in meta:
            failures.append(f"**{shard}**\n\n{meta['failures'].value}")
    meta = {name: dg.MetadataValue.int(v) for name, v in totals.items()}
    meta["shards"] = dg.MetadataValue.int(len(keys))
    meta["per_shard"] = dg.MetadataValue.md(markdown_table(["shard", *totals, "rows/s"], rows))
    known = sorted({m for m in model_ids if m})
    if known:
        meta["model_id"] = dg.MetadataValue.text(", ".join(known))
    if failures:
        meta["failures"] = dg.MetadataValue.md("\n\n".join(failures))
    return meta


def _merge(
    spec: ProductEmbedding,
    context: dg.AssetExecutionContext,
    products: pl.LazyFrame,
    product_images: pl.LazyFrame | None,
    tables: dict[str, pl.DataFrame],
    keys: list[dg.AssetKey],
) -> dg.Output:
    current = spec.current(context, products, product_images)
    ordered = [tables[f"shard_{i}"] for i in range(len(keys))]
    merged, stale = merge_shards(ordered, current.select("asin"), ["asin"])
    if stale:
        context.log.warning(
            f"{spec.name}: {stale} shard rows are no longer in the input and were left out; "
            "materialise the shard assets together with the merge"
        )
    meta = _merge_metadata(context, keys)
    meta["stale_rows_left_out"] = dg.MetadataValue.int(stale)
    dim = embedding_dim(merged)
    if dim is not None:
        meta["dim"] = dg.MetadataValue.int(dim)
    if spec.finish is not None:
        spec.finish(merged, meta)
    return _output(merged, meta)


def _merge_asset(spec: ProductEmbedding, shards: int) -> dg.AssetsDefinition:
    keys = [shard_key(spec.name, i, shards) for i in range(shards)]
    options = {
        "name": spec.name,
        "group_name": GROUP,
        "kinds": {"polars", "parquet"},
        "description": f"{spec.description} Merged from {shards} hash shards "
        f"(group {SHARD_GROUP}), rows in the same order as the unsharded asset.",
        "ins": {f"shard_{i}": dg.AssetIn(key=key) for i, key in enumerate(keys)},
    }
    if spec.needs_images:

        @dg.asset(**options)
        def merge_with_images(
            context: dg.AssetExecutionContext,
            products: pl.LazyFrame,
            product_images: pl.LazyFrame,
            **shard_tables: pl.DataFrame,
        ) -> dg.Output:
            return _merge(spec, context, products, product_images, shard_tables, keys)

        return merge_with_images

    @dg.asset(**options)
    def merge_from_products(
        context: dg.AssetExecutionContext, products: pl.LazyFrame, **shard_tables: pl.DataFrame
    ) -> dg.Output:
        return _merge(spec, context, products, None, shard_tables, keys)

    return merge_from_products


def build_product_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """The product-level embedding assets; with ``shards > 1`` each is ``shards`` hash-shard
    assets (group ``embedding_shards``, separate steps that executors run side by side) plus a
    merge under the unsharded key that everything downstream depends on."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return [_product_asset(spec) for spec in PRODUCT_EMBEDDINGS]
    out: list[dg.AssetsDefinition] = []
    for spec in PRODUCT_EMBEDDINGS:
        out.extend(_product_asset(spec, (i, shards)) for i in range(shards))
        out.append(_merge_asset(spec, shards))
    return out


image_embeddings, title_embeddings, title_clip_embeddings, attribute_embeddings = (
    build_product_assets(1)
)


# ---- category assets (small: never sharded) ---------------------------------------------------


def _category_texts(category_tree: pl.LazyFrame, template: str | None) -> pl.DataFrame:
    nodes = category_tree.select("node_id", "name").collect()
    names = nodes["name"].fill_null("").to_list()
    texts = [template.replace("{name}", n) for n in names] if template else names
    return nodes.with_columns(pl.Series("text", texts, dtype=pl.String), _hash_column(texts))


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    description="Sentence-encoder embedding of every category name in the tree (query side).",
)
def category_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    text_encoder: TextEncoder,
    storage: CatretStorage,
    category_tree: pl.LazyFrame,
) -> dg.Output:
    keys = ["node_id", "name"]
    model_id = text_encoder.model_id
    table, meta = run_incremental(
        context,
        storage,
        "category_embeddings",
        _category_texts(category_tree, None),
        keys,
        model_id,
        lambda: text_encoder.dim,
        _text_chunk(text_encoder.encode, "text", keys, model_id),
        config,
    )
    return _output(table, meta)


@dg.asset(
    group_name=GROUP,
    kinds=KINDS,
    description="CLIP text-tower embedding of a prompt per category name (CLIP zero-shot baseline).",
)
def category_clip_embeddings(
    context: dg.AssetExecutionContext,
    config: CategoryClipConfig,
    clip: OpenClipEncoder,
    storage: CatretStorage,
    category_tree: pl.LazyFrame,
) -> dg.Output:
    if "{name}" not in config.prompt:
        raise ValueError(f"category prompt must contain {{name}}, got {config.prompt!r}")
    keys = ["node_id", "name"]
    model_id = clip.model_id
    table, meta = run_incremental(
        context,
        storage,
        "category_clip_embeddings",
        _category_texts(category_tree, config.prompt),
        keys,
        model_id,
        lambda: clip.dim,
        _text_chunk(clip.encode_texts, "text", keys, model_id),
        config,
    )
    meta["prompt"] = dg.MetadataValue.text(config.prompt)
    return _output(table, meta)


def build_assets(shards: int = 1) -> list[dg.AssetsDefinition]:
    """Every embedding asset, the product-level ones split into ``shards`` hash shards."""
    return [*build_product_assets(shards), category_embeddings, category_clip_embeddings]


ASSETS = build_assets(1)
CHECKS: list = []
