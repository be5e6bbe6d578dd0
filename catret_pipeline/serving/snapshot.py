"""An immutable view of one build of a data dir: everything a request reads.

A request takes the current :class:`Snapshot` once and reads only from it, so swapping the
store's reference to a newly loaded snapshot (one assignment) is the whole of a hot reload: a
request in flight keeps the snapshot it started with, the next one sees the new one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import polars as pl

from catret_pipeline.catalogue.splits import SETTINGS
from catret_pipeline.delivery import rankings
from catret_pipeline.embeddings.prompt import recorded_prompt
from catret_pipeline.serving import selection, tables, vectors
from catret_pipeline.serving.encoders import EncoderSpecs
from catret_pipeline.serving.index import ProductIndex, SavedIndex, build_product_index
from catret_pipeline.serving.selection import ModelChoice
from catret_pipeline.storage.artefacts import ArtefactPath, artefact_path, artefact_root

if TYPE_CHECKING:
    from catret_pipeline.config import CatretConfig


@dataclass(frozen=True)
class Product:
    asin: str
    title: str | None
    category_path: tuple[str, ...]
    #: ``product_images.cache_path`` of an ``ok`` image (relative to the data dir), else None.
    image_path: str | None
    split: str | None


@dataclass(frozen=True)
class Node:
    node_id: str
    name: str
    parent_id: str | None
    depth: int
    path: tuple[str, ...]
    n_subtree: int
    is_leaf: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "parent_id": self.parent_id,
            "depth": self.depth,
            "path": list(self.path),
            "n_subtree": self.n_subtree,
            "is_leaf": self.is_leaf,
        }


@dataclass(frozen=True)
class SettingView:
    choice: ModelChoice
    index: ProductIndex
    model: vectors.ModelVectors
    #: Category names among the setting's train pairs: the model was trained on them.
    seen_names: frozenset[str]
    #: node_id -> ((asin, score), ...) from ``category_rankings`` when fresh for this model.
    pages: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Snapshot:
    data_dir: Path
    #: The root of the binary artefacts (the data dir, or the artefact store's ``UPath``).
    artefacts: ArtefactPath
    signature: tuple
    loaded_at: float
    products: MappingProxyType  # asin -> Product
    nodes: tuple[Node, ...]
    nodes_by_id: MappingProxyType  # node_id -> Node
    #: The cache paths that may be served (the only files /images/ opens).
    image_paths: frozenset[str]
    settings: MappingProxyType  # setting -> SettingView
    errors: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @property
    def version(self) -> str:
        """A short id of the files this snapshot was read from (changes on every reload)."""
        return f"{abs(hash(self.signature)) & 0xFFFFFFFF:08x}"


def _products(t: dict[str, pl.DataFrame]) -> dict[str, Product]:
    products = t["products"].select("asin", "title", "category_path").unique("asin", keep="first")
    images: dict[str, str] = {}
    if "product_images" in t:
        ok = t["product_images"].filter(
            (pl.col("status") == "ok") & pl.col("cache_path").is_not_null()
        )
        images = dict(ok.unique("asin", keep="first").select("asin", "cache_path").iter_rows())
    splits: dict[str, str] = {}
    if "evaluation_pairs" in t:
        pairs = t["evaluation_pairs"].unique("asin", keep="first")
        splits = dict(pairs.select("asin", "split").iter_rows())
    return {
        a: Product(a, title, tuple(path or ()), images.get(a), splits.get(a))
        for a, title, path in products.iter_rows()
    }


def _nodes(tree: pl.DataFrame) -> list[Node]:
    rows = tree.sort("depth", "path")
    return [
        Node(
            r["node_id"],
            r["name"],
            r["parent_id"],
            int(r["depth"]),
            tuple(r["path"] or ()),
            int(r.get("n_subtree") or 0),
            bool(r.get("is_leaf")),
        )
        for r in rows.iter_rows(named=True)
    ]


def _seen(t: dict[str, pl.DataFrame], setting: str) -> frozenset[str]:
    if "evaluation_pairs" not in t:
        return frozenset()
    train = t["evaluation_pairs"].filter(
        (pl.col("setting") == setting) & (pl.col("split") == "train")
    )
    return frozenset(train["category_name"].unique().to_list())


def _settings(t: dict[str, pl.DataFrame]) -> list[str]:
    if "evaluation_pairs" in t:
        have = set(t["evaluation_pairs"]["setting"].unique().to_list())
        return [s for s in SETTINGS if s in have]
    return list(SETTINGS)


def _pages(
    t: dict[str, pl.DataFrame],
    setting: str,
    mv: vectors.ModelVectors,
    index: ProductIndex,
    names: dict[str, str],
) -> dict[str, tuple]:
    """The stored category pages that are still what this snapshot would compute: same model,
    same catalogue vectors (fingerprint) and the node's current name; any other node is
    ranked on request."""
    df = t.get("category_rankings")
    if df is None or df.is_empty():
        return {}
    fp = rankings.catalogue_fingerprint(index.asins, index.vectors)
    rows = df.filter(
        (pl.col("setting") == setting)
        & (pl.col("model") == mv.model)
        & (pl.col("catalogue_fingerprint") == fp)
    ).sort("node_id", "rank")
    out: dict[str, list] = {}
    for node_id, name, asin, score in rows.select("node_id", "node_name", "asin", "score").rows():
        if names.get(node_id) == name:
            out.setdefault(node_id, []).append((asin, float(score)))
    return {k: tuple(v) for k, v in out.items()}


def _saved_indexes(t: dict[str, pl.DataFrame], root: ArtefactPath) -> dict[str, SavedIndex]:
    df = t.get("serving_indexes")
    if df is None:
        return {}
    built = df.filter(pl.col("index_path").is_not_null())
    return {
        setting: SavedIndex(model, artefact_path(root, bin_path), artefact_path(root, labels_path))
        for setting, model, bin_path, labels_path in built.select(
            "setting", "model", "index_path", "labels_path"
        ).rows()
    }


def load_snapshot(config: CatretConfig, override: str | None = None) -> Snapshot:
    """Read the data dir once and build every setting's serving view.

    A setting whose model cannot be served is left out and its reason kept in ``errors``; if
    no setting can be served at all this raises :class:`tables.StoreError`.
    """
    root = Path(config.data_dir).resolve()
    art = artefact_root(root, config.artefact_store)
    sig = tables.signature(root, table_store=config.table_store)
    t = tables.read_tables_once(root, config.table_store)
    specs = EncoderSpecs.from_config(config)
    prompt = recorded_prompt(
        tables.table_path(root, "category_clip_embeddings", config.table_store)
    )
    products = _products(t)
    asins = sorted(products)
    choices = selection.choose_models(
        t.get("fusion_models"), _settings(t), override, t.get("serving_models")
    )
    nodes = _nodes(t["category_tree"])
    names = {n.node_id: n.name for n in nodes}
    saved = _saved_indexes(t, art)
    views: dict[str, SettingView] = {}
    errors: dict[str, str] = {}
    for setting, choice in choices.items():
        try:
            mv = vectors.model_vectors(art, specs, t, choice.model, setting, asins, prompt)
        except (tables.StoreError, ValueError) as exc:
            errors[setting] = f"{choice.model}: {exc}"
            continue
        index = build_product_index(
            mv.asins, mv.vectors, mv.model, saved.get(setting), method=config.serve_index
        )
        pages = MappingProxyType(_pages(t, setting, mv, index, names))
        views[setting] = SettingView(choice, index, mv, _seen(t, setting), pages)
    if not views:
        raise tables.StoreError("no setting can be served: " + "; ".join(errors.values()))
    return Snapshot(
        data_dir=root,
        artefacts=art,
        signature=sig,
        loaded_at=time.time(),
        products=MappingProxyType(products),
        nodes=tuple(nodes),
        nodes_by_id=MappingProxyType({n.node_id: n for n in nodes}),
        image_paths=frozenset(p.image_path for p in products.values() if p.image_path),
        settings=MappingProxyType(views),
        errors=MappingProxyType(errors),
    )
