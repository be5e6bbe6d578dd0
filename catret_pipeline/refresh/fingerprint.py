"""Fingerprints of the raw catalogue's metadata files, for the refresh sensor.

A fingerprint maps each file's path (relative to the raw root) to its size, ``mtime_ns`` and
SHA-256. Hashing a multi-GB XMarket file is the expensive part, so a file is re-hashed only when
its size or mtime differs from the previous fingerprint. The digest covers paths, sizes and
hashes but not mtimes: re-copying an unchanged download (new mtimes, same bytes) is not a change.
Pure Python, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from catret_pipeline.ingest.confine import is_inside
from catret_pipeline.storage.hashing import sha256_file

CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class FileState:
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Fingerprint:
    files: dict[str, FileState]
    hashed: tuple[str, ...] = ()  # files whose bytes were read this time

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for rel in sorted(self.files):
            st = self.files[rel]
            h.update(f"{rel}\x1f{st.size}\x1f{st.sha256}\n".encode())
        return h.hexdigest()


@dataclass(frozen=True)
class Change:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]
    touched: tuple[str, ...]  # mtime changed, same bytes

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for what, items in (
            ("added", self.added),
            ("removed", self.removed),
            ("modified", self.modified),
            ("touched", self.touched),
        ):
            if items:
                shown = ", ".join(items[:limit]) + (
                    f" (+{len(items) - limit})" if len(items) > limit else ""
                )
                parts.append(f"{len(items)} {what}: {shown}")
        return "; ".join(parts) or "no change"


#: Digest recorded for a file that resolves outside the raw root (a symbolic link out).
OUTSIDE_RAW_ROOT = "outside_raw_root"


def fingerprint_files(
    root: Path, files: Iterable[Path], previous: Mapping[str, FileState] | None = None
) -> Fingerprint:
    """Fingerprint ``files`` (under ``root``), reusing ``previous`` hashes of unchanged files."""
    previous = previous or {}
    out: dict[str, FileState] = {}
    hashed: list[str] = []
    real_root = Path(root).resolve()
    for path in files:
        rel = path.relative_to(root).as_posix()
        if not is_inside(path.resolve(), real_root):
            # Ingest quarantines such a file unread, so the sensor must not read it either; its
            # lstat still changes when the link is retargeted, which is a change to report.
            st = path.lstat()
            out[rel] = FileState(st.st_size, st.st_mtime_ns, OUTSIDE_RAW_ROOT)
            continue
        st = path.stat()
        old = previous.get(rel)
        if old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            out[rel] = old
            continue
        digest = sha256_file(path)
        # A file rewritten while being hashed shows a new size/mtime on the next tick.
        out[rel] = FileState(st.st_size, st.st_mtime_ns, digest)
        hashed.append(rel)
    return Fingerprint(out, tuple(hashed))


def compare(old: Mapping[str, FileState], new: Mapping[str, FileState]) -> Change:
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    both = sorted(set(old) & set(new))
    modified = tuple(
        r for r in both if (old[r].size, old[r].sha256) != (new[r].size, new[r].sha256)
    )
    touched = tuple(r for r in both if r not in modified and old[r].mtime_ns != new[r].mtime_ns)
    return Change(added, removed, modified, touched)


@dataclass(frozen=True)
class Cursor:
    """What the sensor remembers between ticks: the last fingerprint and how many runs it asked for."""

    files: dict[str, FileState]
    digest: str | None = None
    requests: int = 0

    def dumps(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "digest": self.digest,
                "requests": self.requests,
                "files": {r: [s.size, s.mtime_ns, s.sha256] for r, s in sorted(self.files.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str | None) -> Cursor:
        """An unreadable or foreign cursor reads as empty: the next tick then requests a run."""
        if not text:
            return cls({})
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                return cls({})
            files = {
                str(r): FileState(int(v[0]), int(v[1]), str(v[2])) for r, v in data["files"].items()
            }
            return cls(files, data.get("digest"), int(data.get("requests", 0)))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return cls({})
