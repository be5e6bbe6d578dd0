"""Input matrices for the fusion heads, assembled from the frozen embedding tables.

Torch-free on purpose: the assets module imports this at module level.

Conventions (documented in docs/models.md, "Fusion models"):

- A product's input to ``g_p`` is the concatenation, in the model's modality order, of its
  per-modality embeddings. A product with no row in a modality's table (e.g. no ``ok`` image,
  so no ``image_embeddings`` row) gets a **zero vector** for that block; how many did is
  recorded in the artefact's JSON and the asset metadata.
- With ``normalize_inputs`` every block is L2-normalised first, so no modality dominates the
  concatenation by scale alone; zero blocks stay zero.
- A category's text vector is the embedding of its **name**: pairs look it up by
  ``category_id`` (the node), free-text queries by name. The encoder sees only the name, so
  nodes that share a name share a vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from catret_pipeline.vectors_math import embedding_matrix, l2_normalize

IMAGE = "image"
TITLE = "title"
ATTRIBUTES = "attributes"
MODALITIES = (IMAGE, TITLE, ATTRIBUTES)


@dataclass(frozen=True)
class ModelSpec:
    """What a fusion model feeds into ``g_p`` and which loss variant it trains with."""

    name: str
    modalities: tuple[str, ...]
    #: In-batch pairs sharing the positive's category name are neither positives nor negatives.
    mask_same_category: bool = False
    #: Pairs whose category is an ancestor/descendant of the positive's get partial weight.
    tree_targets: bool = False
    #: Residual heads (ours): a shared linear skip on title and category vectors, zero-init
    #: MLP branches, so the untrained model scores the zero-shot title-vs-name cosine.
    residual: bool = False
    description: str = ""


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("clip-i", (IMAGE,), description="paper ablation: image only"),
        ModelSpec("clip-ia", (IMAGE, ATTRIBUTES), description="paper ablation: image + attributes"),
        ModelSpec(
            "clip-ita",
            (IMAGE, TITLE, ATTRIBUTES),
            description="the paper's model: image + title + attributes",
        ),
        ModelSpec(
            "clip-ita-masked",
            (IMAGE, TITLE, ATTRIBUTES),
            mask_same_category=True,
            description="ours: CLIP-ITA without same-category false negatives",
        ),
        ModelSpec(
            "clip-ita-tree",
            (IMAGE, TITLE, ATTRIBUTES),
            mask_same_category=True,
            tree_targets=True,
            description="ours: masked + tree-aware soft targets (the paper's future work)",
        ),
        ModelSpec(
            "clip-ita-res",
            (IMAGE, TITLE, ATTRIBUTES),
            mask_same_category=True,
            residual=True,
            description=(
                "ours: masked + residual heads starting at the zero-shot title-vs-name cosine"
            ),
        ),
    )
}

SETTINGS = ("all", "general", "specific")


def model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown fusion model {name!r}; known: {sorted(MODEL_SPECS)}") from None


def _check_unique(df: pl.DataFrame, key: str, table: str) -> None:
    dup = df.filter(pl.col(key).is_duplicated())
    if dup.height:
        example = dup[key][0]
        raise ValueError(
            f"{table} has {dup[key].n_unique()} {key} value(s) on several rows (e.g. {example!r}); "
            "one vector per key is required (several model_ids in one table?)"
        )


@dataclass
class ModalityTable:
    """One embedding table, indexed by key for fast gathers."""

    name: str
    keys: dict[str, int]
    matrix: np.ndarray
    model_ids: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def from_frame(cls, df: pl.DataFrame, name: str, key: str = "asin") -> ModalityTable:
        for col in (key, "embedding"):
            if col not in df.columns:
                raise ValueError(f"{name} lacks column {col!r} (has {df.columns})")
        _check_unique(df, key, name)
        matrix = embedding_matrix(df["embedding"])
        model_ids = (
            sorted(str(m) for m in df["model_id"].drop_nulls().unique().to_list())
            if "model_id" in df.columns
            else []
        )
        keys = {k: i for i, k in enumerate(df[key].to_list())}
        return cls(name=name, keys=keys, matrix=matrix, model_ids=model_ids)

    def gather(self, keys: Sequence[str], normalize: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``keys`` (zeros where absent) and a boolean "present" mask."""
        idx = np.fromiter((self.keys.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        present = idx >= 0
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        if present.any():
            rows = self.matrix[idx[present]]
            out[present] = l2_normalize(rows, check_finite=False) if normalize else rows
        return out, present


@dataclass
class ProductFeatureTables:
    """The three product-side embedding tables, loaded once and shared by every model."""

    tables: dict[str, ModalityTable]

    @classmethod
    def from_frames(
        cls,
        image_embeddings: pl.DataFrame,
        title_embeddings: pl.DataFrame,
        attribute_embeddings: pl.DataFrame,
    ) -> ProductFeatureTables:
        # has_attributes=False rows carry a placeholder vector; treat them as absent like a
        # missing image so "no attributes" is the same zero block everywhere.
        if "has_attributes" in attribute_embeddings.columns:
            attribute_embeddings = attribute_embeddings.filter(
                pl.col("has_attributes").fill_null(False)
            )
        return cls(
            tables={
                IMAGE: ModalityTable.from_frame(image_embeddings, "image_embeddings"),
                TITLE: ModalityTable.from_frame(title_embeddings, "title_embeddings"),
                ATTRIBUTES: ModalityTable.from_frame(attribute_embeddings, "attribute_embeddings"),
            }
        )

    def dims(self, modalities: Sequence[str]) -> dict[str, int]:
        return {m: self.tables[m].dim for m in modalities}

    def model_ids(self) -> dict[str, list[str]]:
        return {m: t.model_ids for m, t in self.tables.items()}

    def features(
        self, asins: Sequence[str], modalities: Sequence[str], normalize: bool = True
    ) -> tuple[np.ndarray, dict[str, int]]:
        """The (n, sum of dims) input matrix and, per modality, how many products lacked it."""
        blocks, missing = [], {}
        for m in modalities:
            block, present = self.tables[m].gather(asins, normalize)
            blocks.append(block)
            missing[m] = int((~present).sum())
        return np.concatenate(blocks, axis=1), missing


@dataclass
class CategoryVectors:
    """Category text vectors by node id and by name (a shared name maps to its smallest node id)."""

    by_id: dict[str, int]
    by_name: dict[str, int]
    matrix: np.ndarray
    model_ids: list[str]

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def from_frame(cls, category_embeddings: pl.DataFrame) -> CategoryVectors:
        for col in ("node_id", "name", "embedding"):
            if col not in category_embeddings.columns:
                raise ValueError(
                    f"category_embeddings lacks column {col!r} (has {category_embeddings.columns})"
                )
        _check_unique(category_embeddings, "node_id", "category_embeddings")
        matrix = embedding_matrix(category_embeddings["embedding"])
        by_id = {k: i for i, k in enumerate(category_embeddings["node_id"].to_list())}
        # Shared names take the row of the smallest node_id (as retrieval does); the encoder
        # maps equal names to equal vectors anyway, so this only pins determinism.
        by_name: dict[str, int] = {}
        node_ids = category_embeddings["node_id"].to_list()
        names = category_embeddings["name"].to_list()
        for i in sorted(range(len(names)), key=lambda j: node_ids[j]):
            by_name.setdefault(names[i], i)
        model_ids = (
            sorted(str(m) for m in category_embeddings["model_id"].drop_nulls().unique().to_list())
            if "model_id" in category_embeddings.columns
            else []
        )
        return cls(by_id=by_id, by_name=by_name, matrix=matrix, model_ids=model_ids)

    def _take(self, idx: np.ndarray, normalize: bool) -> np.ndarray:
        rows = self.matrix[idx]
        return (
            l2_normalize(rows, check_finite=False)
            if normalize
            else rows.astype(np.float32, copy=True)
        )

    def for_ids(self, ids: Sequence[str], normalize: bool = True) -> np.ndarray:
        missing = [i for i in ids if i not in self.by_id]
        if missing:
            raise ValueError(
                f"{len(set(missing))} category id(s) have no category_embeddings row "
                f"(e.g. {missing[0]!r}); re-materialise category_embeddings"
            )
        return self._take(np.array([self.by_id[i] for i in ids], dtype=np.int64), normalize)

    def for_names(
        self, names: Sequence[str], normalize: bool = True
    ) -> tuple[np.ndarray, list[str]]:
        """Vectors for the names that have one, and the names that were found (in order)."""
        found = [n for n in names if n in self.by_name]
        idx = np.array([self.by_name[n] for n in found], dtype=np.int64)
        if not found:
            return np.zeros((0, self.dim), dtype=np.float32), []
        return self._take(idx, normalize), found


def ancestor_table(
    category_tree: pl.DataFrame, node_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """For each node: its depth and its root-to-node chain as integer node codes.

    Returns ``(depth, chain)``: ``chain[i, d - 1]`` is the code of node i's ancestor at depth d
    (itself at its own depth), ``-1`` beyond its depth. Codes index ``category_tree`` rows;
    only the equality of codes matters.
    """
    for col in ("node_id", "parent_id", "depth"):
        if col not in category_tree.columns:
            raise ValueError(f"category_tree lacks column {col!r}")
    ids = category_tree["node_id"].to_list()
    code = {n: i for i, n in enumerate(ids)}
    parent = dict(zip(ids, category_tree["parent_id"].to_list(), strict=True))
    unknown = [n for n in node_ids if n not in code]
    if unknown:
        raise ValueError(
            f"{len(set(unknown))} category id(s) not in category_tree (e.g. {unknown[0]!r})"
        )
    memo: dict[str, list[int]] = {}
    for n in dict.fromkeys(node_ids):
        chain, cur, seen = [], n, set()
        while cur is not None:
            if cur in seen or cur not in code:
                raise ValueError(f"category_tree has a broken parent chain at {cur!r}")
            seen.add(cur)
            chain.append(code[cur])
            cur = parent[cur]
        memo[n] = chain[::-1]
    chains = [memo[n] for n in node_ids]
    max_depth = max((len(c) for c in chains), default=1)
    table = np.full((len(chains), max_depth), -1, dtype=np.int64)
    for i, c in enumerate(chains):
        table[i, : len(c)] = c
    depth = np.array([len(c) for c in chains], dtype=np.int64)
    return depth, table


def array_fingerprint(*parts: object) -> str:
    """A sha256 over arrays (by bytes, shape, dtype) and plain values (by repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass
class PairData:
    """Aligned arrays for one split of one setting, ready to become tensors."""

    asins: list[str]
    products: np.ndarray  # (n, product dim)
    categories: np.ndarray  # (n, category dim)
    #: Integer code of each pair's category *name* (the masking key: the query is a name).
    category_codes: np.ndarray
    #: Tree position of each pair's category node (only for tree-aware targets).
    depth: np.ndarray | None = None
    chain: np.ndarray | None = None
    missing: dict[str, int] = field(default_factory=dict)
    #: Width of each product block, in input order (locates the title block for residual heads).
    block_dims: dict[str, int] = field(default_factory=dict)
    #: Pairs left out because every modality of the product was missing (all-zero input).
    n_dropped_empty: int = 0
    #: Each pair's category node and name (the retrain decision keys examples by them).
    category_ids: list[str] = field(default_factory=list)
    category_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.asins)


PAIR_COLUMNS = ("setting", "asin", "category_id", "category_name", "split")


def build_pair_data(
    pairs: pl.DataFrame,
    spec: ModelSpec,
    products: ProductFeatureTables,
    categories: CategoryVectors,
    *,
    category_tree: pl.DataFrame | None = None,
    normalize: bool = True,
    drop_empty: bool = True,
    name_codes: dict[str, int] | None = None,
) -> PairData:
    """Input matrices for the given pairs (already filtered to one setting and split).

    ``name_codes`` is shared between splits so codes stay comparable; new names are added.
    """
    missing_cols = [c for c in ("asin", "category_id", "category_name") if c not in pairs.columns]
    if missing_cols:
        raise ValueError(f"evaluation_pairs lacks columns {missing_cols}")
    asins = pairs["asin"].to_list()
    x, missing = products.features(asins, spec.modalities, normalize)
    keep = np.ones(len(asins), dtype=bool)
    if drop_empty and len(asins):
        keep = np.abs(x).sum(axis=1) > 0
    ids = pairs["category_id"].to_list()
    names = pairs["category_name"].to_list()
    name_codes = {} if name_codes is None else name_codes
    codes = np.array([name_codes.setdefault(n, len(name_codes)) for n in names], dtype=np.int64)
    c = categories.for_ids(ids, normalize) if ids else np.zeros((0, categories.dim), np.float32)
    depth = chain = None
    if spec.tree_targets:
        if category_tree is None:
            raise ValueError(f"model {spec.name} needs category_tree for its tree-aware targets")
        depth, chain = ancestor_table(category_tree, ids)
        depth, chain = depth[keep], chain[keep]
    return PairData(
        asins=[a for a, k in zip(asins, keep, strict=True) if k],
        products=x[keep],
        categories=c[keep],
        category_codes=codes[keep],
        depth=depth,
        chain=chain,
        missing=missing,
        block_dims=products.dims(spec.modalities),
        n_dropped_empty=int((~keep).sum()),
        category_ids=[i for i, k in zip(ids, keep, strict=True) if k],
        category_names=[n for n, k in zip(names, keep, strict=True) if k],
    )
