"""Which file ``/images/<path>`` may send: only a cache path listed in ``product_images``.

The URL path is matched against the snapshot's set of cache paths (strings, before touching the
file system), then resolved and checked to lie inside ``<data_dir>/image_cache``: a ``..``, an
absolute path, an encoded separator or a symlink pointing out of the cache is refused.
"""

from __future__ import annotations

from catret_pipeline.images.cache import CACHE_DIR, parse_cache_path
from catret_pipeline.serving.snapshot import Snapshot
from catret_pipeline.storage.artefacts import ArtefactPath, artefact_path, is_remote

MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
}
#: Content-addressed: the bytes behind a path never change, so clients may keep them for ever.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def resolve_image(snap: Snapshot, rel: str) -> tuple[ArtefactPath, str] | None:
    """(file, media type) for a servable cache path, else None (the caller answers 404)."""
    if rel not in snap.image_paths:
        return None
    parsed = parse_cache_path(rel)
    if parsed is None:
        return None
    media = MEDIA_TYPES.get(parsed[1])
    if media is None:
        return None
    if is_remote(snap.artefacts):
        # An object store has no symlinks; the key was matched exactly against the cache
        # layout above, so it cannot name anything outside image_cache/.
        path = artefact_path(snap.artefacts, rel)
        return (path, media) if path.is_file() else None
    cache_root = (snap.artefacts / CACHE_DIR).resolve()
    path = (snap.artefacts / rel).resolve()
    if not path.is_relative_to(cache_root) or not path.is_file():
        return None
    return path, media
