"""Read XMarket metadata files into ``raw_products`` and ``quarantine`` rows.

Gzip is inflated with ``zlib`` directly rather than ``gzip.open``: when a stream breaks,
``gzip`` loses the decompressed bytes still in its buffer, while here every complete line
before the break is kept and the break itself becomes one ``corrupt_gzip`` row.

Counting: every item the reader yields is one "line read": each non-blank line, plus one item
per file that is not gzip and one per stream that breaks. Blank lines are skipped and not
counted, but keep their place in ``line_no`` (physical, 1-based) so rows can be found in the
file. Invariant: ``lines_read == len(raw_products) + len(quarantine)``.

A file that resolves outside the raw root (a symbolic link out, or under a linked directory)
is one ``outside_raw_root`` item with empty ``raw_text``: it is never opened (see
:mod:`.confine`).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from catret_pipeline.ingest.confine import OutsideRoot, open_confined
from catret_pipeline.ingest.parsing import (
    DEFAULT_MAX_LINE_BYTES,
    asin_hint,
    parse_line,
    raw_preview,
)
from catret_pipeline.ingest.validation import Candidate, resolve_duplicates, validate_record

GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 64 * 1024  # compressed bytes per read
# Decompressed bytes per step. Deflate expands up to ~1000x, so without this cap one 64 KiB read
# of a decompression bomb would become a 64 MiB block (and copies of it while splitting lines).
INFLATE_CHUNK = 1024 * 1024

RAW_PRODUCTS_SCHEMA = {
    "market": pl.String,
    "source_file": pl.String,
    "line_no": pl.Int64,
    "asin": pl.String,
    "record": pl.String,
}
QUARANTINE_SCHEMA = {
    "source_file": pl.String,
    "line_no": pl.Int64,
    "asin": pl.String,
    "reason": pl.String,
    "detail": pl.String,
    "raw_text": pl.String,
}


@dataclass(frozen=True, slots=True)
class ReadItem:
    """A line (``data``, cut to ``max_line_bytes + 1``; ``n_bytes`` its true length) or a
    file-level problem (``reason`` set: ``not_gzip`` / ``corrupt_gzip`` / ``outside_raw_root``)."""

    line_no: int
    data: bytes = b""
    n_bytes: int = 0
    reason: str | None = None
    detail: str | None = None
    raw_text: str | None = None


class _GzipBroken(Exception):
    pass


def _inflate(fh) -> Iterator[bytes]:
    """Decompressed blocks of a (possibly multi-member) gzip stream; raises ``_GzipBroken``."""
    decomp = zlib.decompressobj(wbits=31)
    in_member = True
    while True:
        try:
            data = fh.read(READ_CHUNK)
        except OSError as exc:
            raise _GzipBroken(f"read error: {exc}") from None
        if not data:
            break
        while data:
            if not in_member:
                # Like gzip.open: zero padding between or after members is allowed.
                data = data.lstrip(b"\x00")
                if not data:
                    break
                decomp = zlib.decompressobj(wbits=31)
                in_member = True
            try:
                out = decomp.decompress(data, INFLATE_CHUNK)
            except zlib.error as exc:
                raise _GzipBroken(f"zlib: {exc}") from None
            if out:
                yield out
            if decomp.eof:
                data = decomp.unused_data
                in_member = False
            else:
                # Input held back by the output cap; when none is left but the cap was hit,
                # one more call with no input drains what zlib still has buffered.
                data = decomp.unconsumed_tail
                while not data and len(out) == INFLATE_CHUNK and not decomp.eof:
                    try:
                        out = decomp.decompress(b"", INFLATE_CHUNK)
                    except zlib.error as exc:
                        raise _GzipBroken(f"zlib: {exc}") from None
                    if out:
                        yield out
                if decomp.eof:
                    data = decomp.unused_data
                    in_member = False
    if in_member:
        raise _GzipBroken("compressed stream ended before the end-of-stream marker")


class _Lines:
    """Split decompressed blocks into lines, keeping at most ``limit + 1`` bytes of any line."""

    def __init__(self, max_line_bytes: int):
        self.keep = max_line_bytes + 1
        self.pending: list[bytes] = []
        self.pending_kept = 0
        self.pending_len = 0
        self.line_no = 0  # physical number of the last completed line

    def _add(self, part: bytes) -> None:
        self.pending_len += len(part)
        room = self.keep - self.pending_kept
        if room > 0 and part:
            piece = part[:room]
            self.pending.append(piece)
            self.pending_kept += len(piece)

    def _take(self) -> tuple[bytes, int]:
        data, n = b"".join(self.pending), self.pending_len
        self.pending, self.pending_kept, self.pending_len = [], 0, 0
        return data, n

    def _emit(self, data: bytes, n: int) -> ReadItem | None:
        self.line_no += 1
        if data.endswith(b"\r") and n == len(data):
            data, n = data[:-1], n - 1
        if n == len(data) and not data.strip():
            return None
        return ReadItem(self.line_no, data, n)

    def feed(self, block: bytes) -> Iterator[ReadItem]:
        parts = block.split(b"\n")
        if len(parts) == 1:
            self._add(block)
            return
        self._add(parts[0])
        item = self._emit(*self._take())
        if item is not None:
            yield item
        for part in parts[1:-1]:
            item = self._emit(part[: self.keep], len(part))
            if item is not None:
                yield item
        self._add(parts[-1])

    def finish(self) -> Iterator[ReadItem]:
        if self.pending_len:
            item = self._emit(*self._take())
            if item is not None:
                yield item

    @property
    def has_pending(self) -> bool:
        return self.pending_len > 0


def iter_metadata_lines(
    path: str | Path,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    *,
    root: str | Path | None = None,
) -> Iterator[ReadItem]:
    """Every non-blank line of a gzip metadata file; problems become one final item.

    With ``root``, a file resolving outside it is not opened: one ``outside_raw_root`` item.
    """
    path = Path(path)
    try:
        # Both closed in finally; the generator may stop early.
        fh = open(path, "rb") if root is None else open_confined(path, root)  # noqa: SIM115
    except OutsideRoot as exc:
        yield ReadItem(0, reason="outside_raw_root", detail=str(exc), raw_text="")
        return
    except OSError as exc:
        yield ReadItem(0, reason="corrupt_gzip", detail=f"could not open file: {exc}", raw_text="")
        return
    try:
        head = fh.read(512)
        if head[:2] != GZIP_MAGIC:
            what = "empty file" if not head else f"starts with {head[:2].hex(' ')}"
            yield ReadItem(
                0,
                reason="not_gzip",
                detail=f"no gzip magic bytes 1f 8b ({what})",
                raw_text=raw_preview(head),
            )
            return
        fh.seek(0)
        lines = _Lines(max_line_bytes)
        try:
            for block in _inflate(fh):
                yield from lines.feed(block)
        except _GzipBroken as exc:
            tail, n = lines._take()
            dropped = f"; incomplete line of {n} bytes dropped" if n else ""
            yield ReadItem(
                lines.line_no + 1,
                reason="corrupt_gzip",
                detail=f"gzip stream unreadable after line {lines.line_no}: {exc}{dropped}",
                raw_text=raw_preview(tail),
            )
            return
        yield from lines.finish()
    finally:
        fh.close()


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    source_file: str  # relative to the raw root, POSIX separators
    market: str

    @property
    def root(self) -> Path:
        """The raw root, implied by ``path`` minus the parts of ``source_file``."""
        return self.path.parents[len(Path(self.source_file).parts) - 1]


@dataclass
class IngestResult:
    raw_products: pl.DataFrame
    quarantine: pl.DataFrame
    lines_read: int
    per_file: list[dict] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    via: Counter = field(default_factory=Counter)

    def check_invariant(self) -> None:
        total = self.raw_products.height + self.quarantine.height
        if self.lines_read != total:
            raise RuntimeError(
                f"ingest reconciliation failed: lines_read={self.lines_read} but "
                f"raw_products={self.raw_products.height} + quarantine={self.quarantine.height} "
                f"= {total}"
            )


def read_catalogue(
    files: Sequence[SourceFile],
    market_priority: Sequence[str] = ("us",),
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> IngestResult:
    """Parse, validate and de-duplicate every line of ``files`` (one pass, in file order)."""
    cands: list[Candidate] = []
    texts: list[str] = []
    q: dict[str, list] = {k: [] for k in QUARANTINE_SCHEMA}
    reasons: Counter = Counter()
    via: Counter = Counter()
    per_file: dict[str, dict] = {}
    lines_read = 0

    def quarantine(src: str, line_no: int, asin, reason: str, detail, raw_text: str) -> None:
        for k, v in zip(
            QUARANTINE_SCHEMA,
            (src, line_no, asin, reason, detail, raw_text[:500]),
            strict=True,
        ):
            q[k].append(v)
        reasons[reason] += 1
        per_file[src]["quarantined"] += 1

    for sf in files:
        src = sf.source_file
        per_file[src] = {"source_file": src, "lines": 0, "valid": 0, "quarantined": 0}
        for item in iter_metadata_lines(sf.path, max_line_bytes, root=sf.root):
            lines_read += 1
            per_file[src]["lines"] += 1
            if item.reason is not None:
                quarantine(src, item.line_no, None, item.reason, item.detail, item.raw_text or "")
                continue
            parsed = parse_line(item.data, max_line_bytes, item.n_bytes)
            if not parsed.ok:
                preview = raw_preview(item.data)
                quarantine(
                    src, item.line_no, asin_hint(preview), parsed.reason, parsed.detail, preview
                )
                continue
            checked = validate_record(parsed.record)
            if not checked.ok:
                quarantine(
                    src,
                    item.line_no,
                    checked.asin,
                    checked.reason,
                    checked.detail,
                    raw_preview(item.data),
                )
                continue
            via[parsed.via] += 1
            per_file[src]["valid"] += 1
            cands.append(Candidate(checked.asin, sf.market, src, item.line_no))
            texts.append(parsed.json_text)

    kept, duplicates = resolve_duplicates(cands, market_priority)
    for loser, winner in duplicates:
        c, w = cands[loser], cands[winner]
        per_file[c.source_file]["valid"] -= 1
        quarantine(
            c.source_file,
            c.line_no,
            c.asin,
            "duplicate_asin",
            f"kept {w.source_file}:{w.line_no} (market {w.market})",
            texts[loser],
        )

    raw = pl.DataFrame(
        {
            "market": [cands[i].market for i in kept],
            "source_file": [cands[i].source_file for i in kept],
            "line_no": [cands[i].line_no for i in kept],
            "asin": [cands[i].asin for i in kept],
            "record": [texts[i] for i in kept],
        },
        schema=RAW_PRODUCTS_SCHEMA,
    )
    quarantine_df = pl.DataFrame(q, schema=QUARANTINE_SCHEMA).sort(
        ["source_file", "line_no", "reason"]
    )
    for row in per_file.values():
        row["kept"] = row.pop("valid")
    result = IngestResult(
        raw_products=raw,
        quarantine=quarantine_df,
        lines_read=lines_read,
        per_file=list(per_file.values()),
        reasons=reasons,
        via=via,
    )
    result.check_invariant()
    return result
