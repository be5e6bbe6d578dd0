"""The component score matrices of ``catret-hybrid`` for one (setting, collection, queries).

One function builds them for validation (to fit the weights) and for test (to rank), so the
two can never disagree about what a component means. See ``hybrid.py`` for the components.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from catret_pipeline.fusion.features import (
    ATTRIBUTES,
    MODALITIES,
    TITLE,
    CategoryVectors,
    ProductFeatureTables,
)
from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker
from catret_pipeline.retrieval.hybrid import COMPONENTS, cosine_matrix, prototypes, zscore_rows
from catret_pipeline.vectors_math import l2_normalize


@dataclass
class SettingData:
    """One setting's pairs split by split, as the hybrid needs them."""

    setting: str
    pairs: pl.DataFrame  # asin, category_name, split, seen_in_train of this setting

    def split(self, name: str) -> pl.DataFrame:
        return self.pairs.filter(pl.col("split") == name)

    def collection(self, split: str) -> list[str]:
        return sorted(self.split(split)["asin"].unique().to_list())

    def queries(self, split: str) -> tuple[list[str], np.ndarray]:
        """Distinct category names of the split's pairs (sorted) and whether each was trained on."""
        q = (
            self.split(split)
            .group_by("category_name")
            .agg(pl.col("seen_in_train").any())
            .sort("category_name")
        )
        return q["category_name"].to_list(), q["seen_in_train"].to_numpy().astype(bool)

    def relevant(self, split: str, names: Sequence[str], asins: Sequence[str]) -> np.ndarray:
        col = {a: j for j, a in enumerate(asins)}
        row = {n: i for i, n in enumerate(names)}
        rel = np.zeros((len(names), len(asins)), dtype=bool)
        for asin, name in self.split(split).select("asin", "category_name").iter_rows():
            if asin in col and name in row:
                rel[row[name], col[asin]] = True
        return rel


def _name_matrix(
    categories: CategoryVectors, names: Sequence[str], normalize: bool = True
) -> np.ndarray:
    """Category-name vectors (unit length unless ``normalize=False``), a zero row for a name
    without an embedding."""
    out = np.zeros((len(names), categories.dim), dtype=np.float32)
    found = [i for i, n in enumerate(names) if n in categories.by_name]
    if found:
        vecs, _ = categories.for_names([names[i] for i in found], normalize=normalize)
        out[found] = vecs
    return out


def prototype_features(products: ProductFeatureTables, asins: Sequence[str]) -> np.ndarray:
    """Each product's image, title and attribute blocks (unit length each, zero when absent),
    concatenated and scaled to unit length: what prototypes are averaged from."""
    x, _ = products.features(list(asins), MODALITIES, normalize=True)
    return l2_normalize(x, "prototype features", check_finite=False)


@dataclass
class HybridContext:
    """Everything the components read, loaded once per run."""

    titles: dict[str, str | None]
    products: ProductFeatureTables
    categories: CategoryVectors
    bm25: Bm25Params

    def setting_prototypes(self, data: SettingData) -> tuple[dict[str, int], np.ndarray]:
        train = data.split("train")
        return prototypes(
            prototype_features(self.products, train["asin"].to_list()),
            train["category_name"].to_list(),
        )

    def component_scores(
        self,
        asins: Sequence[str],
        names: Sequence[str],
        head=None,
        protos: tuple[dict[str, int], np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw (Q, N) scores of every component; ``head`` is a LoadedFusionModel or None (its
        component is then absent)."""
        asins, names = list(asins), list(names)
        q = _name_matrix(self.categories, names)
        ranker = Bm25Ranker([self.titles.get(a) for a in asins], asins, self.bm25)
        out = {
            "bm25": np.stack([ranker.scores(n) for n in names])
            if names
            else np.zeros((0, len(asins)), np.float32),
        }
        for comp, modality in (("title", TITLE), ("attributes", ATTRIBUTES)):
            block, _ = self.products.tables[modality].gather(asins, normalize=True)
            if block.shape[1] != q.shape[1]:
                # A block from another encoder than the category names: no shared space.
                continue
            out[comp] = cosine_matrix(q, block)
        if head is not None:
            from catret_pipeline.fusion import inference

            p = inference.encode_products(
                None, head.model, head.setting, asins, self.products, loaded=head
            )
            c = head.encode_category_inputs(_name_matrix(self.categories, names, normalize=False))
            known = np.array([n in self.categories.by_name for n in names], dtype=bool)
            c[~known] = 0.0
            out["head"] = cosine_matrix(c, p)
        if protos is not None:
            index, centroids = protos
            feats = prototype_features(self.products, asins)
            m = np.zeros((len(names), len(asins)), dtype=np.float32)
            for i, n in enumerate(names):
                if n in index:
                    m[i] = feats @ centroids[index[n]]
            out["prototype"] = m
            if centroids.shape[0]:
                best = (feats @ centroids.T).max(axis=1)
                out["novelty"] = np.tile(-best, (len(names), 1)).astype(np.float32)
        return {c: out[c] for c in COMPONENTS if c in out}


def standardise(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {c: zscore_rows(m) for c, m in raw.items()}
