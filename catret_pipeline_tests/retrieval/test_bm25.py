"""BM25 over titles: tokenisation and an exact ranking on a hand-made corpus."""

import math

import numpy as np
import pytest

from catret_pipeline.retrieval.bm25 import Bm25Params, Bm25Ranker, stopword_set, tokenize

TITLES = [
    "Radio Antenna for Cars",  # radio antenna cars            (3 tokens)
    "Indoor radio antenna, antenna amplifier",  # 5 tokens, antenna twice
    "Kitchen knife set",  # no query term
    "The Radio",  # radio                          (1 token)
    None,  # no title: in the collection, never matched
    "Antenna",  # antenna                        (1 token)
]
ASINS = ["B0", "B1", "B2", "B3", "B4", "B5"]


def lucene_bm25(doc_len, tfs, dfs, n_docs, avgdl, k1=1.5, b=0.75):
    """Lucene BM25 written out by hand, independent of bm25s."""
    score = 0.0
    for tf, df in zip(tfs, dfs, strict=True):
        idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        score += idf * tf / (tf + k1 * (1 - b + b * doc_len / avgdl))
    return score


def test_tokenize_lowercases_splits_and_drops_stopwords():
    stop = stopword_set()
    assert len(stop) == 33 and {"the", "for", "and"} <= stop
    assert tokenize("The Radio-Antenna_for CARS (2-pack)", stop) == [
        "radio",
        "antenna",
        "cars",
        "2",
        "pack",
    ]
    assert tokenize("Café Crème", stop) == ["café", "crème"]
    assert tokenize(None) == [] and tokenize("") == []
    assert tokenize("the and", None) == ["the", "and"]


def test_hand_made_corpus_exact_order_and_scores():
    ranker = Bm25Ranker(TITLES, ASINS)
    asins, scores = ranker.rank("radio antenna", 10)
    # B3 and B5 tie (one matching term in a one-token title): input order decides.
    assert asins == ["B0", "B1", "B3", "B5"]
    avgdl = (3 + 5 + 3 + 1 + 0 + 1) / 6
    expected = [
        lucene_bm25(3, [1, 1], [3, 3], 6, avgdl),
        lucene_bm25(5, [1, 2], [3, 3], 6, avgdl),
        lucene_bm25(1, [1], [3], 6, avgdl),
        lucene_bm25(1, [1], [3], 6, avgdl),
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert ranker.n_empty == 1


def test_zero_score_documents_are_not_returned_and_k_cuts():
    ranker = Bm25Ranker(TITLES, ASINS)
    assert ranker.rank("radio antenna", 2)[0] == ["B0", "B1"]
    assert ranker.rank("kitchen", 10)[0] == ["B2"]
    # no stemming: the plural matches nothing of "antenna"
    assert ranker.rank("Antennas", 10)[0] == []
    assert ranker.rank("Radio Antennas", 10)[0] == ["B3", "B0", "B1"]
    # stopword-only and unknown queries return nothing
    assert ranker.rank("the for", 10)[0] == []
    assert ranker.rank("zzz", 10)[0] == []
    with pytest.raises(ValueError):
        ranker.rank("radio", 0)


def test_parameters_change_the_ranking():
    # b = 0: no length normalisation, so the 5-token title with tf(antenna)=2 wins.
    asins, _ = Bm25Ranker(TITLES, ASINS, Bm25Params(b=0.0)).rank("radio antenna", 10)
    assert asins[0] == "B1"


def test_tiny_and_degenerate_corpora():
    assert Bm25Ranker(["radio"], ["X"]).rank("radio", 5)[0] == ["X"]
    assert Bm25Ranker([], []).rank("radio", 5)[0] == []
    assert Bm25Ranker([None, "the"], ["X", "Y"]).rank("radio", 5)[0] == []
    with pytest.raises(ValueError, match="asins"):
        Bm25Ranker(["a"], ["X", "Y"])
