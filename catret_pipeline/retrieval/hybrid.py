"""``catret-hybrid`` (ours): per-query score fusion of lexical, zero-shot and trained evidence.

Why: on real catalogues most test categories are new, and there the zero-shot rankers (BM25 on
titles, the text encoder's title-vs-name cosine) beat every trained head, while on seen
categories the heads win. Web-search practice is hybrid lexical + dense retrieval; the category
tree adds that a category's training products are known for the categories that were trained
on. So the hybrid ranks each collection by a weighted sum of per-query standardised scores:

- ``bm25``: BM25 of the title (the paper's lexical baseline);
- ``title``: cosine of the title and the category name in the text encoder's space (the
  zero-shot MPNet baseline);
- ``attributes``: the same for the mean-pooled attribute vector (0 without attributes);
- ``head``: the cosine of a trained fusion model (g_c(name) . g_p(product)), the model picked
  by its validation R-precision;
- ``prototype``: cosine to the centroid of the category's training products (image, title and
  attribute blocks, each unit length, concatenated); only names seen in training have one.
- ``novelty``: minus the product's highest cosine to any training category's prototype, the
  same for every query: a product that plainly belongs to a category the model was trained on
  is unlikely to belong to a category created since (new-name route only).

Each component's scores are z-scored over the collection per query, so scales do not matter
and a component that says nothing about a query (all equal) adds nothing. The weights are
found on **validation** (which holds whole category paths out of training, so it has unseen
names), by exhaustive search over a simplex grid, separately for names seen in training and
for new names: whether a category name was trained on is known when a query arrives, and the
evidence that works differs between the two (a new name has no prototype, and a head knows it
only through the text encoder). A route with too few validation queries takes the weights
fitted on all of them.

Pure numpy (the BM25 scores come in as a matrix); tested without Dagster.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

HYBRID_MODEL = "catret-hybrid"
COMPONENTS = ("bm25", "title", "attributes", "head", "prototype", "novelty")
ROUTES = ("seen", "unseen")


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each row standardised to mean 0, std 1; a constant row becomes all zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores.astype(np.float32)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    out = np.where(std > 1e-9, (scores - mean) / np.where(std > 1e-9, std, 1.0), 0.0)
    return out.astype(np.float32)


def fuse(z: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted sum of standardised component matrices (all the same shape)."""
    shape = next(iter(z.values())).shape
    out = np.zeros(shape, dtype=np.float32)
    for name, w in weights.items():
        if w and name in z:
            out += np.float32(w) * z[name]
    return out


def simplex_grid(components: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weight vector on ``components`` with entries in multiples of ``step`` summing to 1."""
    if not 0 < step <= 1:
        raise ValueError(f"grid step must be in (0, 1], got {step}")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise ValueError(f"grid step must divide 1, got {step}")
    out = []
    for combo in itertools.product(range(n + 1), repeat=len(components)):
        if sum(combo) == n:
            out.append({c: k / n for c, k in zip(components, combo, strict=True)})
    return out


def ranking_quality(scores: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: R-precision and average precision of ranking the columns by ``scores``.

    ``relevant`` is a boolean matrix of the same shape; rows without a relevant column give NaN.
    Ties are broken by column order (a stable sort), as the retrieval runs break them.
    """
    relevant = np.asarray(relevant, dtype=bool)
    q, n = scores.shape
    r = relevant.sum(axis=1)
    if q == 0 or n == 0:
        return np.full(q, np.nan), np.full(q, np.nan)
    found = _relevant_positions(scores, relevant)
    with np.errstate(invalid="ignore", divide="ignore"):
        if found is None:
            order = np.argsort(-scores, axis=1, kind="stable")
            hits = np.take_along_axis(relevant, order, axis=1)
            cum = np.cumsum(hits, axis=1)
            at_r = cum[np.arange(q), np.clip(r - 1, 0, n - 1)]
            terms = hits * (cum / np.arange(1, n + 1))
        else:
            # The same numbers as the sort, built at the hits only: the k-th hit of a row at
            # (0-based) position p adds k / (p + 1), summed over the same full-width row so
            # that the float sum, hence the metric, is bit-identical.
            rows, pos = found
            order = np.lexsort((pos, rows))
            rows, pos = rows[order], pos[order]
            k = np.arange(rows.size) - np.searchsorted(rows, rows, side="left") + 1
            terms = np.zeros((q, n))
            terms[rows, pos] = k / (pos + 1)
            at_r = np.bincount(rows[pos < r[rows]], minlength=q)
        rprec = np.where(r > 0, at_r / r, np.nan)
        ap = np.where(r > 0, terms.sum(axis=1) / r, np.nan)
    return rprec.astype(np.float64), ap.astype(np.float64)


#: Pairs x columns compared per block in :func:`_relevant_positions` (bounds its memory).
_COMPARE_BLOCK = 1 << 22


def _relevant_positions(
    scores: np.ndarray, relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(row, position) of each relevant cell in its row's descending-score order (ties: column
    order), or None where sorting the rows is cheaper.

    The grid search ranks one (queries x products) matrix per weight vector, ~1,000 per route,
    and sorting every row made ``hybrid_weights`` grow as products x categories (2 s at 1,200
    paper-shaped products, 116 s at 10,000). Only the relevant cells' positions matter: where
    queries have few relevant columns each one's position is counted directly (columns scoring
    higher, plus equal ones to its left: the stable sort's position). Where they have many (the
    few most-general categories) sorting is cheaper, and a NaN is left to the sort's order."""
    q, n = scores.shape
    rows, cols = np.nonzero(relevant)
    if rows.size > q * max(np.log2(n), 1.0) or np.isnan(scores).any():
        return None
    position = np.empty(rows.size, dtype=np.int64)
    columns = np.arange(n)
    step = max(1, _COMPARE_BLOCK // n)
    for start in range(0, rows.size, step):
        qi, cj = rows[start : start + step], cols[start : start + step]
        row = scores[qi]
        own = scores[qi, cj][:, None]
        ahead = (row > own) | ((row == own) & (columns[None, :] < cj[:, None]))
        position[start : start + step] = ahead.sum(axis=1)
    return rows, position


@dataclass(frozen=True)
class FittedWeights:
    """The weights of one route and what they scored on validation."""

    route: str
    weights: dict[str, float]
    n_queries: int
    val_r_precision: float
    val_ap: float
    #: Validation R-precision of each component alone (same queries), for comparison.
    single: dict[str, float]
    #: True when the route had too few validation queries and took the all-query weights.
    fallback: bool
    #: How far the weights were pulled towards the best single component (0: not at all).
    shrinkage: float = 0.0


def grid_quality(
    z: Mapping[str, np.ndarray],
    relevant: np.ndarray,
    rows: np.ndarray,
    grid: Sequence[Mapping[str, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """(grid point, query) matrices of R-precision and AP over the given query rows."""
    sub = {c: m[rows] for c, m in z.items()}
    rel = relevant[rows]
    rp = np.empty((len(grid), rows.size))
    ap = np.empty((len(grid), rows.size))
    for g, w in enumerate(grid):
        rp[g], ap[g] = ranking_quality(fuse(sub, w), rel)
    return rp, ap


#: Shrinkage levels tried between the fitted weights (0) and the best single component (1).
SHRINKAGE_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _bagged_argmax(
    objective: np.ndarray, matrix: np.ndarray, rng: np.random.Generator, n_bootstrap: int
) -> np.ndarray:
    """Weight vector: mean over bootstrap resamples of the query columns of each resample's best
    grid row (plain argmax for ``n_bootstrap`` <= 0)."""
    if n_bootstrap <= 0:
        return matrix[int(np.argmax(objective.mean(axis=1)))]
    n = objective.shape[1]
    picks = np.zeros(matrix.shape[1])
    for _ in range(n_bootstrap):
        sample = rng.integers(0, n, size=n)
        picks += matrix[int(np.argmax(objective[:, sample].mean(axis=1)))]
    return picks / n_bootstrap


def _single_rows(grid: Sequence[Mapping[str, float]]) -> dict[str, int]:
    """Grid row of each component alone."""
    out = {}
    for g, w in enumerate(grid):
        nonzero = [c for c, v in w.items() if v]
        if len(nonzero) == 1:
            out[nonzero[0]] = g
    return out


def _shrunk(weights: np.ndarray, best: int, level: float) -> np.ndarray:
    onehot = np.zeros_like(weights)
    onehot[best] = 1.0
    return (1.0 - level) * weights + level * onehot


def choose_shrinkage(
    z: Mapping[str, np.ndarray],
    relevant: np.ndarray,
    rows: np.ndarray,
    comps: Sequence[str],
    grid: Sequence[Mapping[str, float]],
    objective: np.ndarray,
    n_bootstrap: int,
    seed: int,
    folds: int = 5,
    repeats: int = 4,
) -> tuple[float, np.ndarray]:
    """The shrinkage level (of :data:`SHRINKAGE_LEVELS`) with the best cross-validated score.

    Why: a route's weights are fitted on a few dozen validation queries, and on a new-category
    route the fit can stray from the best single ranker on the strength of a handful of
    queries (amazon-toys, MiniLM and MPNet builds: validation gains that did not hold). Each
    fold fits the bagged weights and the best single component on the other folds and scores
    every level between the two on its own queries (repeated K-fold, per-query objective as in
    :func:`fit_weights`), so how far to trust the fit is itself decided on validation. Ties go
    to the least shrinkage. Returns (level, mean held-out objective per level).
    """
    n = rows.size
    k = min(folds, n)
    matrix = np.array([[w[c] for c in comps] for w in grid])
    single = _single_rows(grid)
    comp_index = {c: i for i, c in enumerate(comps)}
    total = np.zeros(len(SHRINKAGE_LEVELS))
    rng = np.random.default_rng(seed)
    if k < 2:
        return 0.0, total
    for _ in range(repeats):
        parts = np.array_split(rng.permutation(n), k)
        for f in range(k):
            held = parts[f]
            train = np.concatenate([parts[g] for g in range(k) if g != f])
            fitted = _bagged_argmax(objective[:, train], matrix, rng, n_bootstrap)
            means = {c: objective[g, train].mean() for c, g in single.items()}
            best = comp_index[max(comps, key=lambda c: (means.get(c, -1.0), -comp_index[c]))]
            sub = {c: z[c][rows[held]] for c in comps}
            for i, level in enumerate(SHRINKAGE_LEVELS):
                w = dict(zip(comps, _shrunk(fitted, best, level), strict=True))
                rp, ap = ranking_quality(fuse(sub, w), relevant[rows[held]])
                total[i] += np.nan_to_num(0.5 * (rp + ap), nan=0.0).sum()
    score = total / (repeats * n)
    return float(SHRINKAGE_LEVELS[int(np.argmax(score))]), score


def fit_weights(
    z: Mapping[str, np.ndarray],
    relevant: np.ndarray,
    query_rows: np.ndarray,
    components: Sequence[str],
    step: float = 0.1,
    n_bootstrap: int = 200,
    seed: int = 0,
    shrink: bool = True,
) -> tuple[dict[str, float], float, float, dict[str, float], float]:
    """Weights for ``components`` from the validation queries ``query_rows``.

    Each grid point is scored per query by the mean of R-precision and AP (AP uses the whole
    ranking, so it separates grid points that R-precision alone ties on few queries). The
    fitted weights are the bagged argmax: the mean, over ``n_bootstrap`` resamples of the
    queries, of the best grid point of each resample (ties: grid order). With the few
    validation queries a new-category route has, a plain argmax follows single queries; bagging
    averages that noise out, and ``n_bootstrap=0`` gives the plain argmax. With ``shrink`` they
    are then pulled towards the best single component by the level
    :func:`choose_shrinkage` picks by cross-validation on the same queries.

    Returns (weights, their validation R-precision, their AP, each component alone's
    R-precision, the shrinkage level).
    """
    rows = np.asarray(query_rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("fit_weights needs at least one validation query")
    comps = list(components)
    grid = simplex_grid(comps, step)
    rp, ap = grid_quality(z, relevant, rows, grid)
    objective = np.nan_to_num(0.5 * (rp + ap), nan=0.0)
    single_rows = _single_rows(grid)
    single = {c: float(np.nanmean(rp[g])) for c, g in single_rows.items()}
    matrix = np.array([[w[c] for c in comps] for w in grid])
    fitted = _bagged_argmax(objective, matrix, np.random.default_rng(seed), n_bootstrap)
    level = 0.0
    if shrink:
        level, _ = choose_shrinkage(
            z, relevant, rows, comps, grid, objective, n_bootstrap, seed + 1
        )
        means = {c: objective[g].mean() for c, g in single_rows.items()}
        best = comps.index(max(comps, key=lambda c: (means.get(c, -1.0), -comps.index(c))))
        fitted = _shrunk(fitted, best, level)
    chosen = {c: float(round(v, 4)) for c, v in zip(comps, fitted, strict=True)}
    rps, aps = ranking_quality(fuse({c: z[c][rows] for c in comps}, chosen), relevant[rows])
    return chosen, float(np.nanmean(rps)), float(np.nanmean(aps)), single, level


def fit_routes(
    z: Mapping[str, np.ndarray],
    relevant: np.ndarray,
    seen: np.ndarray,
    components: Mapping[str, Sequence[str]],
    step: float = 0.1,
    min_route_queries: int = 5,
    n_bootstrap: int = 200,
    seed: int = 0,
    shrink: bool = True,
) -> dict[str, FittedWeights]:
    """Weights per route (``seen`` / ``unseen`` query rows of the validation matrices).

    ``components[route]`` lists the components that route may use. A route with fewer than
    ``min_route_queries`` queries takes the weights fitted on every query (restricted to its
    components), so a catalogue whose validation holds one new name does not get weights fitted
    to that one name.
    """
    has_rel = relevant.any(axis=1)
    seen = np.asarray(seen, dtype=bool)
    routes = {"seen": np.flatnonzero(seen & has_rel), "unseen": np.flatnonzero(~seen & has_rel)}
    everyone = np.flatnonzero(has_rel)
    out: dict[str, FittedWeights] = {}
    for route in ROUTES:
        comps = list(components[route])
        rows = routes[route]
        fallback = rows.size < min_route_queries
        fit_rows = everyone if fallback else rows
        if fit_rows.size == 0:
            out[route] = FittedWeights(
                route, {c: 1.0 / len(comps) for c in comps}, 0, float("nan"), float("nan"), {}, True
            )
            continue
        w, rp, ap, single, level = fit_weights(
            z, relevant, fit_rows, comps, step, n_bootstrap, seed, shrink
        )
        if fallback and rows.size:
            # Report what the borrowed weights score on the route's own few queries.
            rps, aps = ranking_quality(fuse({c: z[c][rows] for c in comps}, w), relevant[rows])
            rp, ap = float(np.nanmean(rps)), float(np.nanmean(aps))
        out[route] = FittedWeights(route, w, int(rows.size), rp, ap, single, fallback, level)
    return out


def route_of(seen: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(seen, dtype=bool), "seen", "unseen")


def rank_routed(
    z: Mapping[str, np.ndarray],
    seen: np.ndarray,
    weights: Mapping[str, Mapping[str, float]],
    depth: Sequence[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: (column indices, fused scores) of the top ``depth[i]``, best first, ties by
    column order; each query fused with its route's weights."""
    out = []
    for i, route in enumerate(route_of(seen)):
        row = fuse({c: m[i : i + 1] for c, m in z.items()}, weights[route])[0]
        order = np.argsort(-row, kind="stable")[: int(depth[i])]
        out.append((order, row[order]))
    return out


def cosine_matrix(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(Q, N) cosines of unit-or-zero rows (a zero row scores 0 everywhere)."""
    if queries.size == 0 or items.size == 0:
        return np.zeros((queries.shape[0], items.shape[0]), dtype=np.float32)
    return (queries.astype(np.float32) @ items.astype(np.float32).T).astype(np.float32)


def prototypes(features: np.ndarray, names: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """Unit-length centroid of the feature rows of each name (rows of all-zero features skipped)."""
    index: dict[str, int] = {}
    sums: list[np.ndarray] = []
    for row, name in zip(features, names, strict=True):
        if not np.any(row):
            continue
        if name not in index:
            index[name] = len(sums)
            sums.append(np.zeros(features.shape[1], dtype=np.float64))
        sums[index[name]] += row
    if not sums:
        return {}, np.zeros((0, features.shape[1]), dtype=np.float32)
    m = np.stack(sums)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    return index, m.astype(np.float32)
