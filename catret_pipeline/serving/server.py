"""Running the app: load the store, then uvicorn (``catret serve``)."""

from __future__ import annotations

import logging
import sys

from catret_pipeline.config import CatretConfig
from catret_pipeline.serving.store import Store
from catret_pipeline.serving.tables import StoreError


def serve(
    config: CatretConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    reload_interval: float = 1.0,
    model: str | None = None,
    root_path: str = "",
) -> int:
    import uvicorn

    from catret_pipeline.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        store = Store(config.data_dir, interval=reload_interval, override=model, config=config)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    store.warm()
    for setting, view in store.snapshot.settings.items():
        c = view.choice
        print(
            f"{setting}: {c.model} ({c.reason}), {view.index.n} products, {view.index.method} ({view.index.source})"
        )
    app = create_app(store, watch=reload_interval > 0)
    # One BLAS thread per call: requests already run side by side on the cores, and after the
    # text encoder has run, torch's OpenMP threads spin beside OpenBLAS's own two. Measured on
    # 7,635 x 768 in this process: a matrix-vector product took 7.9 ms with 2 BLAS threads,
    # 1.8 ms with 1 (docs/benchmarks.md, "Serving").
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        # One process: the store (every vector in memory) is loaded once, not per worker.
        uvicorn.run(app, host=host, port=port, root_path=root_path, log_level="info")
    return 0
