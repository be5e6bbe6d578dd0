"""Where binary artefacts live: ``<data_dir>`` or an ``artefact_store`` URL (universal_pathlib).

Binary artefacts are the HNSW indexes and their label sidecars (``indexes/``), trained heads
(``models/``), the content-addressed image cache (``image_cache/``), embedding checkpoints
(``checkpoints/``), the exported ONNX image towers (``onnx_cache/``) and the reports
(``reports/``). Their paths are relative keys (``indexes/clip/all.bin``), recorded as such in
the tables, so one key names the same artefact on a local disk and on ``s3://bucket/prefix``.

A local root is a plain :class:`pathlib.Path` (atomic temp + rename writes, as always); any
other scheme is a :class:`upath.UPath` on an fsspec filesystem. Writes of either kind go through
:func:`~catret_pipeline.storage.atomic.atomic_path`, which uploads a remote target in one call
(the store keeps the previous object until the new one is whole). Libraries that insist on a
local file (hnswlib) read through :func:`staged_input`.

What stays local under ``data_dir`` whatever the store: ``catret.duckdb`` (DuckDB's own file),
``model_cache/`` (assembled from installed packages, per machine) and the build lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TypeAlias

from upath import UPath

from catret_pipeline.storage.tables import LOCAL_PROTOCOLS, is_remote

#: An artefact file or folder: a local ``Path`` or a remote ``UPath``.
ArtefactPath: TypeAlias = Path | UPath

#: Description of the ``artefact_store`` field of the storage resource (declared once).
ARTEFACT_STORE_HELP = (
    "Where binary artefacts (indexes, head weights, the image cache, checkpoints, ONNX exports, "
    "reports) live: '' = under data_dir; else a URL (s3://bucket/prefix, gs://..., memory://...) "
    "read and written through universal_pathlib / fsspec, staged to local temp files where a "
    "library needs a path. catret.duckdb and model_cache/ stay under data_dir."
)


def as_artefact_path(path) -> ArtefactPath:
    """A local path (str or PathLike) as ``Path``; a remote ``UPath`` unchanged."""
    return path if isinstance(path, UPath) and is_remote(path) else Path(path)


def artefact_root(data_dir: str | os.PathLike, artefact_store: str = "") -> ArtefactPath:
    """The root every artefact key is relative to: ``data_dir`` unless a store URL is set."""
    if not artefact_store:
        return Path(data_dir).resolve()
    root = UPath(artefact_store)
    if root.protocol in LOCAL_PROTOCOLS:
        local = Path(root.path)
        if not local.is_absolute():
            raise ValueError(
                f"artefact_store {artefact_store!r}: a file:// URL needs an absolute path"
            )
        return local.resolve()
    return root


def artefact_path(root: ArtefactPath, *parts: str) -> ArtefactPath:
    """``root / parts``, refusing anything that escapes ``root`` (a key read from a table is
    data, and ``..`` or an absolute path in it must not reach another file)."""
    if not is_remote(root):
        p = (root / Path(*parts)).resolve() if parts else root
        if root != p and root not in p.parents:
            raise ValueError(f"path {p} escapes the data directory {root}")
        return p
    rel = PurePosixPath(*parts) if parts else PurePosixPath()
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"artefact key {str(rel)!r} escapes the artefact store {root}")
    return root.joinpath(*rel.parts) if rel.parts else root


def relative_key(root: ArtefactPath, path: ArtefactPath) -> str:
    """The POSIX key of ``path`` under ``root`` (what tables record)."""
    if is_remote(root):
        return PurePosixPath(path.path).relative_to(PurePosixPath(root.path)).as_posix()
    return Path(path).relative_to(root).as_posix()


def remove_tree(path: ArtefactPath) -> None:
    """Delete a folder of artefacts (checkpoint parts once their table is whole); missing is
    fine."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(path.path, recursive=True)


def read_bytes(path: ArtefactPath) -> bytes:
    """The whole file through one open handle (a concurrent replace cannot mix two versions)."""
    with path.open("rb") as fh:
        return fh.read()


@contextlib.contextmanager
def staged_input(path: ArtefactPath) -> Iterator[Path]:
    """A local file with ``path``'s bytes for libraries that need a path: the file itself
    locally, else a download into a temporary file, removed afterwards."""
    if not is_remote(path):
        yield Path(path)
        return
    fd, tmp = tempfile.mkstemp(prefix=".catret-stage-", suffix="-" + PurePosixPath(path.path).name)
    os.close(fd)
    try:
        path.fs.get_file(path.path, tmp)
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def open_image_source(item):
    """What PIL's ``Image.open`` can take for an image item: remote artefacts as in-memory
    bytes (PIL reads paths and file objects, not fsspec URLs), anything else unchanged."""
    import io

    if isinstance(item, UPath) and is_remote(item):
        return io.BytesIO(read_bytes(item))
    return item
