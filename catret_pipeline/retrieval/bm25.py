"""BM25 over product titles (the paper's lexical baseline), scored by ``bm25s``.

Scoring: bm25s ``method="lucene"`` (Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
tf part = tf / (tf + k1 * (1 - b + b * |d| / avgdl))) with k1=1.5, b=0.75, the bm25s and
Lucene defaults. This idf is never negative, so a score is 0 exactly when a title shares no
term with the query; such titles are not returned (they carry no evidence, and ranking them
would only list the collection in row order).

Tokenisation is ours, not bm25s's, so it is stated in one place: lowercase, split on anything
that is not a Unicode letter or digit, drop the 33 English stopwords of Lucene's classic
``ENGLISH_STOP_WORDS_SET`` (``bm25s.stopwords.STOPWORDS_EN``). No stemming: no stemmer package
is pinned, and category names and titles share their surface forms often enough.
Repeated query terms count once per occurrence, as in a Lucene boolean query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_TOKEN_RE = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Bm25Params:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("lucene", "robertson", "atire"):
            raise ValueError(f"method must be lucene, robertson or atire, got {self.method!r}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")


def stopword_set() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str | None, stopwords: frozenset[str] | None = None) -> list[str]:
    if not text:
        return []
    tokens = _TOKEN_RE.findall(text.lower())
    if stopwords:
        tokens = [t for t in tokens if t not in stopwords]
    return tokens


class Bm25Ranker:
    """A BM25 index over ``titles``, returning ``asins``.

    Titles that are null or tokenise to nothing stay in the collection (they count in N and
    the average length) but can never match.
    """

    def __init__(
        self,
        titles: Sequence[str | None],
        asins: Sequence[str],
        params: Bm25Params | None = None,
    ) -> None:
        import bm25s

        # bm25s sets its logger to DEBUG; its per-call chatter is not ours to show.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if len(titles) != len(asins):
            raise ValueError(f"{len(titles)} titles but {len(asins)} asins")
        self.params = params or Bm25Params()
        self.asins = np.asarray(list(asins), dtype=object)
        self._stop = stopword_set() if self.params.stopwords else frozenset()
        corpus = [tokenize(t, self._stop) for t in titles]
        self.n_empty = sum(1 for doc in corpus if not doc)
        self._retriever = None
        if len(corpus) and self.n_empty < len(corpus):
            self._retriever = bm25s.BM25(
                k1=self.params.k1, b=self.params.b, method=self.params.method
            )
            self._retriever.index(corpus, show_progress=False)

    def __len__(self) -> int:
        return int(self.asins.shape[0])

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every title for ``query``, in input order."""
        out = np.zeros(len(self), dtype=np.float32)
        tokens = tokenize(query, self._stop)
        if self._retriever is None or not tokens:
            return out
        ids = self._retriever.get_tokens_ids(tokens)
        if not ids:
            return out
        out[:] = self._retriever.get_scores_from_ids(ids)
        return out

    def rank(self, query: str, k: int) -> tuple[list[str], np.ndarray]:
        """Top-``k`` ``(asins, scores)`` with score > 0, best first, ties in input order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.scores(query)
        hit = np.flatnonzero(scores > 0)
        order = hit[np.lexsort((hit, -scores[hit]))][:k]
        return self.asins[order].tolist(), scores[order]
