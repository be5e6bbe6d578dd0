"""Acquire one product image: local mirror first, else HTTP(S) with retries; always decode-validated.

Nothing here trusts its input. URLs may use other schemes (``file://``), carry control
characters, or name files like ``..%2F..%2Fetc%2Fpasswd``; servers may hang, reset, send HTML,
send fewer bytes than announced, or a tiny PNG that declares a ten-gigapixel canvas. Each of
these ends as a :class:`FetchResult` with a short reason code, never as an exception escaping
to the caller.

Statuses: ``ok``; ``missing`` (``no_url``); ``refused``: not fetched on principle, before any
byte is sent (``unsafe_url``: not plain http(s); ``refused_address``: the host, or a redirect
hop, resolves to a loopback / private / link-local / otherwise non-public address the
allow-list does not permit, see :mod:`.addresses`); ``failed``: tried, and it did not work
(``not_in_mirror``, ``http_<status>``, ``timeout``, ``connection_error``, ``too_large``,
``truncated``, ``not_an_image``, ``corrupt``, ``decompression_bomb``, ``internal_error``).

The mirror is consulted by file name only and opens no connection, so the address policy
applies to downloads alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.guard import GuardedHTTPHandler, GuardedHTTPSHandler, RefusedAddress

#: Pillow formats accepted, with the file extension the cache uses. A whitelist, because
#: ``Image.open`` would otherwise also try EPS (which shells out to Ghostscript), TIFF and
#: dozens of rarely exercised decoders on bytes that came from the internet.
ALLOWED_FORMATS: dict[str, str] = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
}

DEFAULT_USER_AGENT = "catret-image-fetcher/0.1 (category-to-image retrieval research)"

#: The whole transfer of one attempt must finish within this many ``timeout_s``: the socket
#: timeout alone bounds each read, so a server dripping one byte per second would never time out.
TRANSFER_DEADLINE_FACTOR = 3.0

_CHUNK = 64 * 1024
_MAX_URL_CHARS = 4096
_MAX_DETAIL_CHARS = 200
_SAFE_SCHEMES = frozenset({"http", "https"})
#: Reason codes whose rows get ``status="refused"`` rather than ``"failed"``.
REFUSED_REASONS = frozenset({"unsafe_url", "refused_address"})


@dataclass(frozen=True)
class FetchOptions:
    """Everything :func:`fetch_one` needs; the Dagster resource builds one of these."""

    mirror_dir: str = ""
    download: bool = True
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    max_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    user_agent: str = DEFAULT_USER_AGENT
    #: Non-public hosts / networks downloads may reach; empty (the default): public only.
    allow: AllowList = AllowList()

    def __post_init__(self) -> None:
        problems = []
        if self.timeout_s <= 0:
            problems.append(f"timeout_s must be > 0 (got {self.timeout_s})")
        if self.retries < 0:
            problems.append(f"retries must be >= 0 (got {self.retries})")
        if self.backoff_s < 0:
            problems.append(f"backoff_s must be >= 0 (got {self.backoff_s})")
        if self.max_bytes <= 0:
            problems.append(f"max_bytes must be > 0 (got {self.max_bytes})")
        if self.max_pixels <= 0:
            problems.append(f"max_pixels must be > 0 (got {self.max_pixels})")
        if problems:
            raise ValueError("invalid image fetch options: " + "; ".join(problems))


@dataclass
class FetchResult:
    """Outcome of acquiring one URL.

    ``data`` holds the validated original bytes (never re-encoded) until a caller stores them
    and drops them; ``bytes`` keeps their length after that. ``source`` says where they came
    from (``mirror`` / ``download``); ``network_bytes`` counts everything read from sockets,
    failed attempts included.
    """

    url: str | None
    status: str
    reason: str | None = None
    detail: str = ""
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    data: bytes | None = field(default=None, repr=False)
    source: str | None = None
    attempts: int = 0
    network_bytes: int = 0
    cache_path: str | None = None

    @property
    def ext(self) -> str | None:
        return ALLOWED_FORMATS.get(self.format) if self.format else None

    @property
    def reason_text(self) -> str | None:
        """``code: detail`` as stored in the ``reason`` column (``None`` for ok rows)."""
        if self.reason is None:
            return None
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class FetchError(Exception):
    """A failure with a reason code; ``retryable`` marks transient transport failures."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = _clip(detail)
        self.retryable = retryable


def _clip(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


# --------------------------------------------------------------------------- URLs and mirror


def normalise_url(url: object) -> str | None:
    """The URL as a stripped string, or ``None`` when there is none (null, NaN, blank)."""
    if url is None or not isinstance(url, str):
        return None
    url = url.strip()
    return url or None


def check_url(url: str) -> None:
    """Raise ``unsafe_url`` unless ``url`` is a plain http(s) URL with a host."""
    if len(url) > _MAX_URL_CHARS:
        raise FetchError("unsafe_url", f"URL longer than {_MAX_URL_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise FetchError("unsafe_url", "control character in URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FetchError("unsafe_url", f"unparseable URL: {exc}") from None
    if parts.scheme.lower() not in _SAFE_SCHEMES:
        raise FetchError("unsafe_url", f"scheme {parts.scheme or '(none)'!r} is not http(s)")
    if not parts.hostname:
        raise FetchError("unsafe_url", "URL has no host")


def mirror_file_name(url: str) -> str | None:
    """The file name a mirror would hold ``url`` under: its last path segment, unquoted.

    ``None`` when that segment is empty or could name anything but a plain file inside the
    mirror (``.``, ``..``, a separator after unquoting, a NUL byte).
    """
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return None
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\x00")):
        return None
    return name


def mirror_lookup(mirror_dir: str | Path, url: str) -> Path | None:
    """The mirror file for ``url``, or ``None``; never a path outside ``mirror_dir``.

    Symbolic links are followed only when their target is still inside the mirror.
    """
    if not mirror_dir:
        return None
    name = mirror_file_name(url)
    if name is None:
        return None
    try:
        root = Path(mirror_dir).resolve()
        resolved = (root / name).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if root not in resolved.parents or not resolved.is_file():
        return None
    return resolved


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Validate that ``data`` is a whole image of an allowed format; return (format, w, h).

    The pixel limit is checked here, per decode, right after the header is parsed and before
    any pixel data is decompressed, instead of relying on ``PIL.Image.MAX_IMAGE_PIXELS``
    (process-global; changing it per thread would race). Pillow's own global guard still
    applies on top and is reported as the same reason.
    """
    from PIL import Image, UnidentifiedImageError

    formats = tuple(ALLOWED_FORMATS)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            fmt, (width, height) = im.format, im.size
            if width <= 0 or height <= 0:
                raise FetchError("corrupt", f"{fmt} declares size {width}x{height}")
            if width * height > max_pixels:
                raise FetchError(
                    "decompression_bomb",
                    f"{fmt} {width}x{height} = {width * height} pixels > max_pixels {max_pixels}",
                )
            # verify() checks structure (PNG CRCs, chunk order) without decoding; it leaves the
            # image unusable, so the real decode needs a fresh open.
            im.verify()
        with Image.open(io.BytesIO(data), formats=formats) as im:
            im.load()
    except FetchError:
        raise
    except Image.DecompressionBombError as exc:
        raise FetchError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        head = data[:16].lstrip().lower()
        kind = "HTML" if head.startswith((b"<!doctype", b"<html")) else "unrecognised"
        raise FetchError("not_an_image", f"{kind} content, {len(data)} bytes") from None
    except EOFError as exc:
        raise FetchError("truncated", f"decoder hit end of data: {exc}") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, MemoryError) as exc:
        # Pillow reports short data as OSError("image file is truncated ...") or a
        # "broken data stream"/"truncated" message; everything else is structural damage.
        msg = str(exc)
        low = msg.lower()
        if "truncated" in low or "broken data stream" in low or "premature end" in low:
            raise FetchError("truncated", msg) from None
        raise FetchError("corrupt", f"{type(exc).__name__}: {msg}") from None
    return fmt, width, height


# --------------------------------------------------------------------------- HTTP


class _SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to http(s) URLs, refused as ``unsafe_url`` (not a bare ``http_302``)."""

    max_redirections = 5

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            try:
                check_url(urllib.parse.urljoin(req.full_url, location))
            except FetchError as exc:
                fp.close()
                raise FetchError(exc.reason, f"redirect to {location!r}: {exc.detail}") from None
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


@lru_cache(maxsize=16)
def _build_opener(allow: AllowList) -> urllib.request.OpenerDirector:
    # Assembled by hand so that no file:, ftp: or data: handler exists at all; ProxyHandler()
    # keeps the usual *_proxy / no_proxy environment variables working. The guarded handlers
    # check the address of every connection, redirect hops included. One opener per allow-list
    # (they are few), shared by threads as before.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        GuardedHTTPHandler(allow),
        GuardedHTTPSHandler(allow),
        urllib.request.HTTPDefaultErrorHandler(),
        _SafeRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timed out" in str(exc)


def _download_once(url: str, opts: FetchOptions, counter: list[int]) -> bytes:
    """One HTTP attempt; ``counter[0]`` accumulates bytes read even when the attempt fails."""
    request = urllib.request.Request(
        url, headers={"User-Agent": opts.user_agent, "Accept": "image/*,*/*;q=0.5"}
    )
    deadline = time.monotonic() + TRANSFER_DEADLINE_FACTOR * opts.timeout_s
    try:
        response = _build_opener(opts.allow).open(request, timeout=opts.timeout_s)
    except FetchError:
        raise
    except RefusedAddress as exc:
        raise FetchError("refused_address", exc.detail) from None
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            exc.close()
        retryable = exc.code >= 500 or exc.code in (408, 429)
        raise FetchError(f"http_{exc.code}", str(exc.reason), retryable=retryable) from None
    except urllib.error.URLError as exc:
        if _is_timeout(exc.reason):
            raise FetchError(
                "timeout", f"no response within {opts.timeout_s}s", retryable=True
            ) from None
        raise FetchError("connection_error", str(exc.reason), retryable=True) from None
    except (http.client.InvalidURL, ValueError) as exc:
        raise FetchError("unsafe_url", str(exc)) from None
    except TimeoutError:
        raise FetchError(
            "timeout", f"no response within {opts.timeout_s}s", retryable=True
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(
            "connection_error", f"{type(exc).__name__}: {exc}", retryable=True
        ) from None

    with response:
        declared = response.headers.get("Content-Length")
        try:
            expected = int(declared) if declared is not None else None
        except ValueError:
            expected = None
        if expected is not None and expected > opts.max_bytes:
            raise FetchError("too_large", f"Content-Length {expected} > max_bytes {opts.max_bytes}")
        buf = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(
                        "timeout",
                        f"transfer not finished within {TRANSFER_DEADLINE_FACTOR * opts.timeout_s:g}s "
                        f"({len(buf)} bytes read)",
                        retryable=True,
                    )
                # read1 returns after one recv: read() would keep a dripping server inside one call.
                chunk = response.read1(min(_CHUNK, opts.max_bytes + 1 - len(buf)))
                if not chunk:
                    break
                buf += chunk
                counter[0] += len(chunk)
                if len(buf) > opts.max_bytes:
                    raise FetchError("too_large", f"body exceeds max_bytes {opts.max_bytes}")
        except FetchError:
            raise
        except http.client.IncompleteRead as exc:
            raise FetchError(
                "truncated", f"connection closed mid-body: {exc}", retryable=True
            ) from None
        except TimeoutError:
            raise FetchError(
                "timeout",
                f"read stalled for {opts.timeout_s}s after {len(buf)} bytes",
                retryable=True,
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(
                "connection_error",
                f"{type(exc).__name__} after {len(buf)} bytes: {exc}",
                retryable=True,
            ) from None
    if expected is not None and len(buf) < expected:
        raise FetchError(
            "truncated", f"got {len(buf)} of {expected} bytes (Content-Length)", retryable=True
        )
    return bytes(buf)


def _download(url: str, opts: FetchOptions, rng: random.Random) -> tuple[bytes, int, int]:
    """Download with retries; return (data, attempts, network bytes)."""
    counter = [0]
    for attempt in range(opts.retries + 1):
        try:
            return _download_once(url, opts, counter), attempt + 1, counter[0]
        except FetchError as exc:
            exc.attempts = attempt + 1  # type: ignore[attr-defined]
            exc.network_bytes = counter[0]  # type: ignore[attr-defined]
            if not exc.retryable or attempt == opts.retries:
                raise
        # Exponential backoff with jitter so that many workers hitting one failing host do
        # not retry in lockstep.
        time.sleep(opts.backoff_s * (2**attempt) * rng.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- public API


def _ok(url: str, data: bytes, opts: FetchOptions, **extra) -> FetchResult:
    fmt, width, height = decode_image(data, opts.max_pixels)
    return FetchResult(
        url=url,
        status="ok",
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        width=width,
        height=height,
        format=fmt,
        data=data,
        **extra,
    )


def _from_mirror(path: Path, url: str, opts: FetchOptions) -> FetchResult:
    size = path.stat().st_size
    if size > opts.max_bytes:
        raise FetchError("too_large", f"mirror file {size} bytes > max_bytes {opts.max_bytes}")
    return _ok(url, path.read_bytes(), opts, source="mirror")


def fetch_one(
    url: object, options: FetchOptions | None = None, *, rng: random.Random | None = None
) -> FetchResult:
    """Acquire and validate one image. Never raises for bad input or network trouble."""
    opts = options or FetchOptions()
    clean = normalise_url(url)
    if clean is None:
        return FetchResult(url=None, status="missing", reason="no_url")
    try:
        return _fetch_checked(clean, opts, rng or random.Random())
    except FetchError as exc:
        return FetchResult(
            url=clean,
            status="refused" if exc.reason in REFUSED_REASONS else "failed",
            reason=exc.reason,
            detail=exc.detail,
            attempts=getattr(exc, "attempts", 0),
            network_bytes=getattr(exc, "network_bytes", 0),
        )
    except Exception as exc:  # a decoder or library bug must not stop a 40k-image run
        return FetchResult(
            url=clean,
            status="failed",
            reason="internal_error",
            detail=_clip(f"{type(exc).__name__}: {exc}"),
        )


def _fetch_checked(url: str, opts: FetchOptions, rng: random.Random) -> FetchResult:
    check_url(url)
    mirror_failure: FetchError | None = None
    mirror_path = mirror_lookup(opts.mirror_dir, url)
    if mirror_path is not None:
        try:
            return _from_mirror(mirror_path, url, opts)
        except (FetchError, OSError) as exc:
            mirror_failure = (
                exc
                if isinstance(exc, FetchError)
                else FetchError("corrupt", f"mirror read failed: {exc}")
            )
            if not opts.download:
                raise mirror_failure from None
    if not opts.download:
        raise FetchError("not_in_mirror", "download disabled and no mirror file")
    try:
        data, attempts, network = _download(url, opts, rng)
    except FetchError as exc:
        if mirror_failure is not None:
            exc.detail = _clip(f"{exc.detail} (mirror copy: {mirror_failure.reason})")
        raise
    try:
        return _ok(url, data, opts, source="download", attempts=attempts, network_bytes=network)
    except FetchError as exc:
        exc.attempts = attempts  # type: ignore[attr-defined]
        exc.network_bytes = network  # type: ignore[attr-defined]
        raise


def iter_fetch(
    urls: Iterable[str],
    options: FetchOptions,
    concurrency: int = 8,
    process: Callable[[FetchResult], FetchResult] | None = None,
    *,
    seed: int | None = None,
) -> Iterator[FetchResult]:
    """Fetch ``urls`` with at most ``concurrency`` in flight, yielding results as they finish.

    ``process`` runs in the worker thread on each result (e.g. write to the cache and drop
    ``data``), so decoded bytes never pile up in the caller. Submission is windowed, so a
    40k-URL run holds a few dozen futures, not 40k.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 (got {concurrency})")
    master = random.Random(seed)

    def work(url: str, rng_seed: int) -> FetchResult:
        result = fetch_one(url, options, rng=random.Random(rng_seed))
        if process is not None:
            try:
                result = process(result)
            except Exception as exc:  # e.g. disk full while caching: record, do not abort
                result = replace(
                    result,
                    status="failed",
                    reason="internal_error",
                    detail=_clip(f"storing failed: {type(exc).__name__}: {exc}"),
                    data=None,
                )
        return result

    window = concurrency * 4
    pending: set[Future] = set()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="catret-img") as pool:
        for url in urls:
            pending.add(pool.submit(work, url, master.getrandbits(32)))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
