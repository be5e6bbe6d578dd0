"""``catret search``: rank products for a category name from the materialised indexes.

Nothing is trained or rebuilt here. Vector models (``mpnet``, ``clip`` and every trained model
in ``hnsw_indexes``) search the saved HNSW index of the (model, setting); ``bm25`` scores the
titles of the setting's test collection, as ``retrieval_runs`` does.

The query vector of a name that is a category in the tree is the precomputed one (the very vector
the evaluation used). Any other name is encoded on the fly with the encoder the pipeline is
configured with, after checking that it is the encoder the stored vectors came from (a different
encoder puts the query in another space, so every score would be meaningless).
See docs/retrieval.md, "Search".
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from catret_pipeline import settings
from catret_pipeline.storage.atomic import atomic_write_bytes
from catret_pipeline.storage.tables import TablePath, read_tables, table_file, table_root

BM25_MODEL = "bm25"
SETTINGS = ("all", "general", "specific")
MATERIALIZE_HINT = "run `catret materialize` first"


class SearchError(Exception):
    """A search that cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Hit:
    rank: int
    asin: str
    score: float
    title: str | None
    category_path: list[str]
    #: ``product_images.cache_path`` (relative to the data dir) of an ``ok`` image, else None.
    image_path: str | None


@dataclass
class SearchResults:
    """Ranked hits plus how the query was answered; iterates over the hits."""

    query: str
    model: str
    setting: str
    hits: list[Hit]
    #: ``precomputed`` (a category of the tree), ``encoded`` (on the fly) or ``bm25``.
    query_source: str
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]


# ---- reading the materialised tables ------------------------------------------------------------


def _tables(root: Path) -> TablePath:
    # Tables follow CATRET_TABLE_STORE like the pipeline; binaries stay under the data dir.
    return table_root(root, settings.default_table_store())


def _asset(root: Path, name: str) -> TablePath:
    return table_file(_tables(root), [name])


def _unreadable(path: TablePath, exc: Exception) -> SearchError:
    # Reads go through one open handle, so a build's rename cannot mix two versions; what
    # still fails is a file caught mid-replace or one that is damaged. Only the second needs
    # a rebuild: while a build runs, a retry is the remedy.
    from catret_pipeline.serving.store import build_running

    if isinstance(path, Path) and any(build_running(p) for p in path.parents[:3]):
        return SearchError(
            f"cannot read {path} while a build rewrites it ({type(exc).__name__}); "
            "retry in a moment"
        )
    return SearchError(
        f"cannot read {path}: the file is damaged (empty, truncated or not Parquet: {exc}); "
        "re-run `catret materialize` to rebuild it"
    )


def _scan(path: TablePath) -> pl.LazyFrame:
    try:
        return read_tables([path], lazy=True)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _read(root: Path, name: str, what: str) -> pl.DataFrame:
    path = _asset(root, name)
    if not path.exists():
        raise SearchError(f"{what} needs the {name} table, missing at {path}: {MATERIALIZE_HINT}")
    return _scan(path).collect()


def _available(indexes: pl.DataFrame) -> str:
    built = indexes.filter(pl.col("index_path").is_not_null())
    by_model: dict[str, list[str]] = {}
    for m, s in built.select("model", "setting").sort("model", "setting").iter_rows():
        by_model.setdefault(m, []).append(s)
    parts = [f"{m} ({', '.join(s)})" for m, s in by_model.items()]
    return "; ".join([f"{BM25_MODEL} (every setting with test pairs)", *parts])


def available_models(data_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Model -> settings that can be searched in ``data_dir`` (empty when nothing is built)."""
    root = Path(data_dir)
    out: dict[str, list[str]] = {}
    pairs_path = _asset(root, "evaluation_pairs")
    if pairs_path.exists():
        settings = (
            _scan(pairs_path)
            .filter(pl.col("split") == "test")
            .select(pl.col("setting").unique())
            .collect()["setting"]
            .to_list()
        )
        if settings:
            out[BM25_MODEL] = sorted(settings)
    idx_path = _asset(root, "hnsw_indexes")
    if idx_path.exists():
        built = _scan(idx_path).collect().filter(pl.col("index_path").is_not_null())
        for m, s in built.select("model", "setting").sort("model", "setting").iter_rows():
            out.setdefault(m, []).append(s)
    return out


# ---- query vectors ---------------------------------------------------------------------------------


def _precomputed(df: pl.DataFrame, key: str, name: str) -> np.ndarray | None:
    from catret_pipeline.vectors_math import embedding_matrix

    rows = df.filter((pl.col(key) == name) & pl.col("embedding").is_not_null())
    if rows.is_empty():
        return None
    # Same-name nodes share one query vector: the smallest node_id's, as in retrieval_runs.
    if "node_id" in rows.columns:
        rows = rows.sort("node_id")
    return embedding_matrix(rows["embedding"].head(1))[0]


def _stored_model_ids(df: pl.DataFrame, table: str) -> list[str]:
    if "model_id" not in df.columns:
        raise SearchError(f"{table} has no model_id column: re-run `catret materialize`")
    return sorted(df["model_id"].drop_nulls().unique().to_list())


def _check_encoder(encoder_id: str, stored: Sequence[str], table: str, kind: str) -> None:
    if not stored:
        raise SearchError(f"{table} is empty: cannot tell which {kind} encoder built the index")
    if encoder_id not in stored:
        raise SearchError(
            f"the index was built with another {kind} encoder: {table} holds vectors of "
            f"{', '.join(stored)}, the configured encoder is {encoder_id}. Search with the "
            "same encoder settings (CATRET_PROFILE / CATRET_CLIP_* / CATRET_TEXT_MODEL) as the "
            "build, or re-run `catret materialize` with the new ones"
        )


def _instance_prompt() -> str | None:
    """The prompt recorded on the last category_clip_embeddings materialisation, if any."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not (Path(home) / "dagster.yaml").exists():
        return None
    try:
        import dagster as dg

        from catret_pipeline.cli import open_instance

        # Under the instance lock: a build creating the instance right now must finish first.
        instance = open_instance(wait_s=10.0)
        event = instance.get_latest_materialization_event(dg.AssetKey("category_clip_embeddings"))
        if event is None or event.asset_materialization is None:
            return None
        value = event.asset_materialization.metadata.get("prompt")
        return str(value.value) if value is not None else None
    except Exception:  # any instance trouble only means one candidate fewer
        return None


def recover_prompt(table: pl.DataFrame, candidates: Sequence[str]) -> str | None:
    """The first candidate prompt that reproduces the stored ``content_hash`` of a row.

    ``category_clip_embeddings.content_hash`` is sha1 of the prompt with the name filled in, so a
    candidate is proven right (or wrong) against the table itself.
    """
    rows = table.select("name", "content_hash").drop_nulls().head(20)
    if rows.is_empty():
        return None
    for prompt in dict.fromkeys(candidates):
        if "{name}" not in prompt:
            continue
        if all(
            hashlib.sha1(prompt.replace("{name}", n).encode("utf-8")).hexdigest() == h
            for n, h in rows.iter_rows()
        ):
            return prompt
    return None


def _encode_text(root: Path, name: str, table: pl.DataFrame, table_name: str) -> np.ndarray:
    from catret_pipeline.serving import encoders

    # The encoder itself, built once per process from the build's settings (no Dagster
    # resources: a query needs the model, not the pipeline's definitions).
    # The id comes from the spec, so a wrong encoder is refused before anything is loaded.
    model_id = encoders.text_spec(root).model_id
    _check_encoder(model_id, _stored_model_ids(table, table_name), table_name, "text")
    encoder = encoders.text_model(root)
    return np.asarray(encoder.encode([name]), dtype=np.float32)[0]


def _query_vector(
    root: Path, model: str, setting: str, name: str
) -> tuple[np.ndarray, str, list[str]]:
    notes: list[str] = []
    if model == "mpnet":
        table = _read(root, "category_embeddings", "mpnet")
        vec = _precomputed(table, "name", name)
        if vec is not None:
            return vec, "precomputed", notes
        return _encode_text(root, name, table, "category_embeddings"), "encoded", notes
    if model == "clip":
        table = _read(root, "category_clip_embeddings", "clip")
        vec = _precomputed(table, "name", name)
        if vec is not None:
            return vec, "precomputed", notes
        from catret_pipeline.serving import encoders

        _check_encoder(
            encoders.clip_spec().model_id,
            _stored_model_ids(table, "category_clip_embeddings"),
            "category_clip_embeddings",
            "CLIP",
        )
        from catret_pipeline.embeddings.assets import DEFAULT_CATEGORY_PROMPT

        recorded = _instance_prompt()
        prompt = recover_prompt(
            table, [p for p in (recorded, DEFAULT_CATEGORY_PROMPT, "{name}") if p]
        )
        if prompt is None:
            prompt = DEFAULT_CATEGORY_PROMPT
            notes.append(
                "the build's CLIP prompt could not be recovered from category_clip_embeddings; "
                f"used the default {DEFAULT_CATEGORY_PROMPT!r}"
            )
        else:
            notes.append(f"CLIP prompt {prompt!r}")
        text = prompt.replace("{name}", name)
        clip = encoders.clip_model()
        return np.asarray(clip.encode_texts([text]), dtype=np.float32)[0], "encoded", notes

    fused_path = _asset(root, "fused_representations")
    if not fused_path.exists():
        raise SearchError(f"{model} needs fused_representations: {MATERIALIZE_HINT}")
    rows = (
        _scan(fused_path)
        .filter(
            (pl.col("model") == model)
            & (pl.col("setting") == setting)
            & (pl.col("kind") == "category")
        )
        .select(pl.col("key").alias("name"), "embedding")
        .collect()
    )
    vec = _precomputed(rows, "name", name)
    if vec is not None:
        return vec, "precomputed", notes
    return _encode_trained(root, model, setting, name), "encoded", notes


def _encode_trained(root: Path, model: str, setting: str, name: str) -> np.ndarray:
    from catret_pipeline.fusion import inference
    from catret_pipeline.serving import encoders
    from catret_pipeline.serving.vectors import ArtefactRoot

    storage = ArtefactRoot(root)
    try:
        loaded = inference.load_fusion_model(storage, model, setting)
    except FileNotFoundError as exc:
        raise SearchError(f"{exc} ({MATERIALIZE_HINT})") from exc
    stored = loaded.meta.get("input_model_ids", {}).get("category") or []
    stored = [stored] if isinstance(stored, str) else list(stored)
    _check_encoder(
        encoders.text_spec(root).model_id, stored, f"the {model}/{setting} artefact", "text"
    )
    encoder = encoders.text_model(root)
    vec = inference.encode_queries(storage, model, setting, [name], encoder.encode, loaded=loaded)
    return vec[0]


# ---- search -------------------------------------------------------------------------------------


def _bm25(root: Path, setting: str, name: str, k: int) -> tuple[list[str], np.ndarray]:
    from catret_pipeline.retrieval.assets import collection_asins, held_out_pairs
    from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker

    pairs = held_out_pairs(_read(root, "evaluation_pairs", "bm25"))
    asins = collection_asins(pairs, setting)
    if not asins:
        have = sorted(pairs["setting"].unique().to_list())
        raise SearchError(
            f"bm25: setting {setting!r} has no test products; settings with test pairs: "
            f"{', '.join(have) or 'none'} ({MATERIALIZE_HINT})"
        )
    titles = (
        _read(root, "products", "bm25").select("asin", "title").unique(subset="asin", keep="first")
    )
    collection = pl.DataFrame({"asin": asins}).join(titles, on="asin", how="left")
    # The same parameters as retrieval_runs, so scores match the evaluated run.
    ranker = Bm25Ranker(collection["title"].to_list(), collection["asin"].to_list(), Bm25Params())
    return ranker.rank(name, k)


def _missing_index(model: str, setting: str, indexes: pl.DataFrame) -> str:
    from catret_pipeline.fusion.features import MODEL_SPECS

    if model in indexes["model"].to_list():
        return f"model {model!r} has no index for setting {setting!r} ({MATERIALIZE_HINT})"
    if model in ("mpnet", "clip", *MODEL_SPECS):
        return (
            f"model {model!r} is not materialised in this data dir (trained models: "
            f"fusion_models config `models`; {MATERIALIZE_HINT})"
        )
    return f"unknown model {model!r}"


def _vector_search(
    root: Path, model: str, setting: str, name: str, k: int
) -> tuple[list[str], np.ndarray, str, list[str]]:
    from catret_pipeline.retrieval.hnsw_index import load_index
    from catret_pipeline.retrieval.hnsw_index import search as hnsw_search

    indexes = _read(root, "hnsw_indexes", "vector search")
    row = indexes.filter((pl.col("model") == model) & (pl.col("setting") == setting))
    if row.is_empty():
        raise SearchError(
            f"{_missing_index(model, setting, indexes)}; available: {_available(indexes)}"
        )
    rec = row.row(0, named=True)
    if rec["index_path"] is None:
        raise SearchError(
            f"{model}/{setting} has no index: the setting's test products have no {model} "
            f"vectors; available: {_available(indexes)}"
        )
    try:
        loaded = load_index(root / rec["index_path"], root / rec["labels_path"])
    except (FileNotFoundError, ValueError) as exc:
        raise SearchError(f"{model}/{setting}: {exc} ({MATERIALIZE_HINT})") from exc
    vec, source, notes = _query_vector(root, model, setting, name)
    if vec.shape[-1] != loaded.dim:
        raise SearchError(
            f"{model}/{setting}: the query vector has dimension {vec.shape[-1]}, the index "
            f"{loaded.dim}: the index and the query tables come from different builds "
            f"(re-run `catret materialize`)"
        )
    if not np.any(vec):
        notes.append("the query vector is all zeros: every score is 0")
    res = hnsw_search(loaded, vec[None, :], k)
    if res.method[0] == "exact":
        notes.append("answered by exact search (the HNSW graph could not fill k results)")
    return res.asins[0].tolist(), res.scores[0], source, notes


def _attach(root: Path, asins: list[str], scores: np.ndarray) -> tuple[list[Hit], list[str]]:
    notes: list[str] = []
    info = pl.DataFrame({"asin": asins}, schema={"asin": pl.String})
    products_path = _asset(root, "products")
    if products_path.exists():
        products = (
            _scan(products_path)
            .filter(pl.col("asin").is_in(asins))
            .select("asin", "title", "category_path")
            .collect()
            .unique(subset="asin", keep="first")
        )
        info = info.join(products, on="asin", how="left")
    else:
        notes.append(f"no products table at {products_path}: titles unknown")
        info = info.with_columns(
            pl.lit(None, pl.String).alias("title"),
            pl.lit(None, pl.List(pl.String)).alias("category_path"),
        )
    images_path = _asset(root, "product_images")
    if images_path.exists():
        images = (
            _scan(images_path)
            .filter((pl.col("status") == "ok") & pl.col("cache_path").is_not_null())
            .filter(pl.col("asin").is_in(asins))
            .select("asin", "cache_path")
            .collect()
            .unique(subset="asin", keep="first")
        )
        info = info.join(images, on="asin", how="left")
    else:
        info = info.with_columns(pl.lit(None, pl.String).alias("cache_path"))
    by_asin = {r["asin"]: r for r in info.iter_rows(named=True)}
    hits = [
        Hit(
            rank=i + 1,
            asin=a,
            score=float(s),
            title=by_asin[a]["title"],
            category_path=list(by_asin[a]["category_path"] or []),
            image_path=by_asin[a]["cache_path"],
        )
        for i, (a, s) in enumerate(zip(asins, scores, strict=True))
    ]
    return hits, notes


def search(
    data_dir: str | os.PathLike,
    query: str,
    model: str = "clip-ita",
    setting: str = "specific",
    k: int = 10,
) -> SearchResults:
    """Top-``k`` products of ``setting``'s test collection for the category name ``query``.

    Raises :class:`SearchError` (with what to do) when the data dir, table, index, model or
    setting is missing, or when an unseen name would be encoded by another encoder than the one
    the index was built with.
    """
    name = (query or "").strip()
    if not name:
        raise SearchError("the query is empty: give a category name")
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    if setting not in SETTINGS:
        raise SearchError(f"unknown setting {setting!r}; expected one of {', '.join(SETTINGS)}")
    root = Path(data_dir).resolve()
    if not _tables(root).is_dir():
        raise SearchError(f"no materialised assets under {_tables(root)}: {MATERIALIZE_HINT}")
    if model == BM25_MODEL:
        asins, scores = _bm25(root, setting, name, k)
        source, notes = "bm25", []
        if not asins:
            notes.append("no title shares a term with the query")
    else:
        asins, scores, source, notes = _vector_search(root, model, setting, name, k)
    hits, more = _attach(root, asins, scores)
    return SearchResults(name, model, setting, hits, source, [*notes, *more])


# ---- output -------------------------------------------------------------------------------------


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _clip_left(text: str, width: int) -> str:
    # The leaf end of a category path says the most: cut from the root side.
    return text if len(text) <= width else "..." + text[len(text) - max(0, width - 3) :]


def format_results(
    hits: SearchResults | Sequence[Hit],
    query: str,
    model: str,
    setting: str,
    title_width: int = 60,
    path_width: int = 60,
) -> str:
    rows = list(hits)
    source = getattr(hits, "query_source", None)
    head = f'query "{query}"  model {model}  setting {setting}  k={len(rows)}'
    if source:
        head += f"  query vector: {source}"
    lines = [head]
    if not rows:
        lines.append("no results")
    else:
        lines.append(
            f"{'rank':>4}  {'asin':<12}  {'title':<{title_width}}  {'category path':<{path_width}}  score"
        )
        for h in rows:
            title = _clip((h.title or "(no title)").replace("\n", " "), title_width)
            path = _clip_left(" > ".join(h.category_path), path_width)
            lines.append(
                f"{h.rank:>4}  {h.asin:<12}  {title:<{title_width}}  {path:<{path_width}}  {h.score:.4f}"
            )
    for note in getattr(hits, "notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def print_results(
    hits: SearchResults | Sequence[Hit], query: str, model: str, setting: str
) -> None:
    print(format_results(hits, query, model, setting))


TILE = 160
CAPTION_LINES = 3
PAD = 8


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw, text: str, font, width: int, lines: int = CAPTION_LINES - 1) -> list[str]:
    """Word-wrap ``text`` into at most ``lines`` lines; the last one is cut with '...'."""
    words = text.replace("\n", " ").split()
    out: list[str] = []
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        out.append(_fit(draw, line, font, width))
    if words:
        out.append(_fit(draw, " ".join(words), font, width))
    return out


def _tile_image(root: Path, hit: Hit):
    from PIL import Image, ImageDraw, ImageOps

    tile = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    reason = "no image"
    if hit.image_path:
        try:
            with Image.open(root / hit.image_path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im = ImageOps.contain(im, (TILE, TILE))
                tile.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
                return tile
        except Exception:  # a damaged cache file gets the placeholder, not a failed sheet
            reason = "unreadable image"
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, TILE - 1, TILE - 1], outline=(180, 180, 180))
    font = _font(14)
    w = draw.textlength(reason, font=font)
    draw.text(((TILE - w) / 2, TILE / 2 - 8), reason, fill=(120, 120, 120), font=font)
    return tile


def render_contact_sheet(
    hits: SearchResults | Sequence[Hit], data_dir: str | os.PathLike, title: str, columns: int = 5
):
    """The sheet as a PIL image: header, then one tile per hit with rank, score and title."""
    from PIL import Image, ImageDraw

    root = Path(data_dir).resolve()
    rows_hits = list(hits)
    cols = max(1, min(columns, len(rows_hits) or 1))
    n_rows = max(1, -(-len(rows_hits) // cols))
    header_font, caption_font = _font(20), _font(12)
    line_h = 15
    header_h = 56
    cell_w, cell_h = TILE + 2 * PAD, TILE + PAD + CAPTION_LINES * line_h + PAD
    width = max(cols * cell_w + PAD, 360)
    sheet = Image.new("RGB", (width, header_h + n_rows * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (PAD, 8), _fit(draw, title, header_font, width - 2 * PAD), fill="black", font=header_font
    )
    model, setting = getattr(hits, "model", None), getattr(hits, "setting", None)
    sub = f"{model} / {setting}" if model else ""
    sub = f"{sub}  ({len(rows_hits)} results)" if rows_hits else f"{sub}  no results"
    draw.text((PAD, 34), sub.strip(), fill=(90, 90, 90), font=caption_font)
    for i, hit in enumerate(rows_hits):
        x = PAD + (i % cols) * cell_w
        y = header_h + (i // cols) * cell_h
        sheet.paste(_tile_image(root, hit), (x + PAD // 2, y))
        ty = y + TILE + 4
        draw.text(
            (x + PAD // 2, ty), f"#{hit.rank}  {hit.score:.3f}", fill="black", font=caption_font
        )
        for j, line in enumerate(_wrap(draw, hit.title or "(no title)", caption_font, TILE)):
            draw.text(
                (x + PAD // 2, ty + (j + 1) * line_h), line, fill=(40, 40, 40), font=caption_font
            )
    return sheet


def write_contact_sheet(
    hits: SearchResults | Sequence[Hit],
    data_dir: str | os.PathLike,
    path: str | os.PathLike,
    title: str,
) -> Path:
    """Write the contact sheet PNG atomically to ``path``; returns its absolute path."""
    image = render_contact_sheet(hits, data_dir, title)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    out = Path(path).expanduser().resolve()
    atomic_write_bytes(out, buf.getvalue())
    return out
