"""The JSON shapes of the API (docs/serving.md), built from a snapshot's objects."""

from __future__ import annotations

from urllib.parse import quote

from catret_pipeline.search import Hit, SearchResults
from catret_pipeline.serving.snapshot import Node, SettingView, Snapshot


def image_url(root_path: str, image_path: str | None) -> str | None:
    # Relative to the server's own root, so it works behind a proxy that mounts it under a path.
    return f"{root_path}/images/{quote(image_path)}" if image_path else None


def hit(h: Hit, root_path: str) -> dict:
    return {
        "rank": h.rank,
        "asin": h.asin,
        "title": h.title,
        "score": round(h.score, 6),
        "category_path": h.category_path,
        "image_url": image_url(root_path, h.image_path),
    }


def results(res: SearchResults, view: SettingView, snap: Snapshot, root_path: str) -> dict:
    return {
        "query": res.query,
        "setting": res.setting,
        "model": res.model,
        "query_source": res.query_source,
        "seen_in_train": res.query in view.seen_names,
        "snapshot": snap.version,
        "notes": res.notes,
        "hits": [hit(h, root_path) for h in res],
    }


def node(n: Node, view: SettingView) -> dict:
    return {**n.as_dict(), "seen_in_train": n.name in view.seen_names}


def tree(snap: Snapshot, view: SettingView) -> dict:
    return {
        "setting": view.choice.setting,
        "model": view.model.model,
        "snapshot": snap.version,
        "nodes": [node(n, view) for n in snap.nodes],
    }


def health(snap: Snapshot, reloads: int, last_error: str | None) -> dict:
    return {
        "status": "ok",
        "data_dir": str(snap.data_dir),
        "snapshot": snap.version,
        "loaded_at": snap.loaded_at,
        "reloads": reloads,
        "last_reload_error": last_error,
        "products": len(snap.products),
        "categories": len(snap.nodes),
        "settings": {
            s: {
                **v.choice.as_dict(),
                "model": v.model.model,
                "products_indexed": v.index.n,
                "index": v.index.method,
                "index_source": v.index.source,
                "new_names": v.model.encode is not None,
                # Nodes whose category_rankings page is fresh for this model (0: none built).
                "category_pages_stored": len(v.pages),
            }
            for s, v in snap.settings.items()
        },
        "unavailable_settings": dict(snap.errors),
    }
