"""Retrieval: HNSW indexes over product vectors, exact search, BM25 over titles, and the
ranked lists every model returns for every test query."""
