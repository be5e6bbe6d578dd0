"""The vocabulary of one image fetch: :class:`FetchOptions` in, :class:`FetchResult` out.

Statuses: ``ok``; ``missing`` (``no_url``); ``refused``: not fetched on principle, before any
byte is sent (``unsafe_url``: not plain http(s); ``refused_address``: the host, or a redirect
hop, resolves to a loopback / private / link-local / otherwise non-public address the
allow-list does not permit, see :mod:`.addresses`); ``failed``: tried, and it did not work
(``not_in_mirror``, ``http_<status>``, ``timeout``, ``connection_error``, ``too_large``,
``truncated``, ``not_an_image``, ``corrupt``, ``decompression_bomb``, ``internal_error``).
A :class:`FetchError` carries one of these reason codes from where it is found to
:func:`.fetch.fetch_one`, which turns it into the result row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catret_pipeline.config_fields import described
from catret_pipeline.images.addresses import AllowList

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

#: ``detail`` texts are clipped to this many characters.
MAX_DETAIL_CHARS = 200
#: Reason codes whose rows get ``status="refused"`` rather than ``"failed"``.
REFUSED_REASONS = frozenset({"unsafe_url", "refused_address"})


@dataclass(frozen=True)
class FetchOptions:
    """Everything :func:`.fetch.fetch_one` needs; the ``image_fetcher`` resource declares the
    described fields from here and builds one of these."""

    mirror_dir: str = described(
        "Directory of pre-downloaded images, matched by the URL's file name "
        "(last path segment, no query string). Used before any download. Empty: no mirror.",
        default="",
    )
    download: bool = described(
        "Download over HTTP(S) what the mirror lacks (False: offline).", default=True
    )
    timeout_s: float = described(
        "Socket timeout for connect and each read; a whole transfer must finish within 3x this.",
        default=10.0,
    )
    retries: int = described(
        "Extra attempts after the first on timeouts, connection errors, 5xx, 408, "
        "429 and short bodies (never on other 4xx).",
        default=3,
    )
    backoff_s: float = described(
        "Base of the exponential backoff between attempts (x2 each retry, "
        "jittered by a factor in [0.5, 1.5]).",
        default=0.5,
    )
    max_bytes: int = described(
        "Largest accepted image file; enforced while streaming.", default=10_000_000
    )
    max_pixels: int = described(
        "Largest accepted width x height, checked from the header before decoding "
        "(decompression-bomb guard).",
        default=40_000_000,
    )
    user_agent: str = described("HTTP User-Agent header.", default=DEFAULT_USER_AGENT)
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
        self.detail = clip(detail)
        self.retryable = retryable


def clip(text: object) -> str:
    """``text`` on one line, at most ``MAX_DETAIL_CHARS`` long."""
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"
