"""HTTP(S) download of one URL: a hand-built opener, size and time limits, retries with backoff.

Only http(s) handlers exist; every connection (redirect hops included) goes through the
address guard of :mod:`.guard`. Each failure becomes a :class:`~.fetch_types.FetchError` with a
reason code, ``retryable`` for transient transport trouble.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import lru_cache

from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.fetch_types import FetchError, FetchOptions
from catret_pipeline.images.guard import GuardedHTTPHandler, GuardedHTTPSHandler, RefusedAddress
from catret_pipeline.images.urls import check_url

#: The whole transfer of one attempt must finish within this many ``timeout_s``: the socket
#: timeout alone bounds each read, so a server dripping one byte per second would never time out.
TRANSFER_DEADLINE_FACTOR = 3.0

_CHUNK = 64 * 1024


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


def download_once(url: str, opts: FetchOptions, counter: list[int]) -> bytes:
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


def download(url: str, opts: FetchOptions, rng: random.Random) -> tuple[bytes, int, int]:
    """Download with retries; return (data, attempts, network bytes)."""
    counter = [0]
    for attempt in range(opts.retries + 1):
        try:
            return download_once(url, opts, counter), attempt + 1, counter[0]
        except FetchError as exc:
            exc.attempts = attempt + 1  # type: ignore[attr-defined]
            exc.network_bytes = counter[0]  # type: ignore[attr-defined]
            if not exc.retryable or attempt == opts.retries:
                raise
        # Exponential backoff with jitter so that many workers hitting one failing host do
        # not retry in lockstep.
        time.sleep(opts.backoff_s * (2**attempt) * rng.uniform(0.5, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover
