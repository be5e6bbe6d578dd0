"""fetch_one / iter_fetch against a real HTTP server on 127.0.0.1 (no mocks).

The server helpers here (``ImageServer``, ``serve``, image builders) are reused by the other
``test_images_*`` modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from catret_pipeline.images.addresses import AllowList
from catret_pipeline.images.fetch import (
    FetchError,
    FetchOptions,
    decode_image,
    fetch_one,
    iter_fetch,
)

# --------------------------------------------------------------------------- fixtures' helpers


def jpeg_bytes(width: int = 32, height: int = 24, seed: int = 0) -> bytes:
    img = Image.new("RGB", (width, height), ((seed * 37) % 256, 90, 200))
    for x in range(0, width, 4):
        img.putpixel((x, (x + seed) % height), (255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(width: int = 20, height: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (width, height), (1, 2, 3, 128)).save(buf, format="PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that claims a ``width`` x ``height`` canvas."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + chunk(b"IEND", b"")
    )


HTML = b"<!DOCTYPE html><html><body><h1>Robot check</h1></body></html>"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server.owner
        with srv.lock:
            srv.hits[path] += 1
            hit = srv.hits[path]
        route = srv.routes.get(path)
        if route is None:
            route = srv.routes.get("*")
        if route is None:
            self.send_error(404)
            return
        route(self, hit)

    # helpers used by routes
    def send_body(
        self, body: bytes, ctype: str = "image/jpeg", status: int = 200, length: int | None = None
    ):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ImageServer

    def handle_error(self, request, client_address) -> None:
        # Routes that reset or abandon connections make the base class print tracebacks.
        pass


Route = Callable[[_Handler, int], None]


class ImageServer:
    """A real HTTP server on 127.0.0.1 (or another loopback ``host``) with scripted routes and
    per-path hit counts."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at shutdown so hanging handlers return
        self.in_flight = 0
        self.max_in_flight = 0
        self._srv = _Server((host, 0), _Handler)
        self._srv.owner = self
        self.port = self._srv.server_address[1]
        self._thread = threading.Thread(
            target=self._srv.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def total_hits(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    # ---- route builders
    def static(self, path: str, body: bytes, ctype: str = "image/jpeg", status: int = 200) -> str:
        self.routes[path] = lambda h, _hit: h.send_body(body, ctype, status)
        return self.url(path)

    def flaky(self, path: str, body: bytes, failures: int, status: int = 500) -> str:
        def route(h: _Handler, hit: int) -> None:
            if hit <= failures:
                h.send_error(status)
            else:
                h.send_body(body)

        self.routes[path] = route
        return self.url(path)

    def slow(self, path: str, body: bytes, delay: float) -> str:
        def route(h: _Handler, _hit: int) -> None:
            self.release.wait(delay)
            h.send_body(body)

        self.routes[path] = route
        return self.url(path)

    def drip(self, path: str, body: bytes, every: float) -> str:
        """Headers at once, then one byte every ``every`` seconds: each read is quick, the whole is not."""

        def route(h: _Handler, _hit: int) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            for i in range(len(body)):
                if self.release.wait(every):
                    return
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()

        self.routes[path] = route
        return self.url(path)

    def short_body(self, path: str, body: bytes, missing: int) -> str:
        """Announces ``missing`` more bytes than it sends, then closes."""
        self.routes[path] = lambda h, _hit: h.send_body(body, length=len(body) + missing)
        return self.url(path)

    def unsized(self, path: str, body: bytes) -> str:
        """No Content-Length: the body ends when the connection closes (HTTP/1.0)."""

        def route(h: _Handler, _hit: int) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return self.url(path)

    def hang(self, path: str) -> str:
        self.routes[path] = lambda _h, _hit: self.release.wait(10)
        return self.url(path)

    def reset(self, path: str) -> str:
        def route(h: _Handler, _hit: int) -> None:
            # SO_LINGER 0 makes close() send RST instead of FIN: a hard connection reset.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True

        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str) -> str:
        def route(h: _Handler, _hit: int) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url(path)

    def gauge(self, path: str, body: bytes, hold: float) -> str:
        """Records how many requests are in flight at once."""

        def route(h: _Handler, _hit: int) -> None:
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                self.release.wait(hold)
            finally:
                # Counted out before the body goes: once the client has read it, it may send
                # its next request before this thread runs again (max_in_flight read 4 with
                # concurrency 3 in a clean-clone CI run).
                with self.lock:
                    self.in_flight -= 1
            h.send_body(body)

        self.routes[path] = route
        return self.url(path)

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[ImageServer]:
    with ImageServer(host) as srv:
        yield srv


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: These tests' image servers listen on loopback, which downloads refuse by default (see
#: test_images_ssrf.py): every test that downloads from them opts in, as an operator would.
LOOPBACK = AllowList.parse(["127.0.0.1"])
#: The same opt-in for ``ImageFetcher`` (the resource takes the entries as strings).
LOOPBACK_HOSTS = ["127.0.0.1"]

# Fast settings: a timeout well above localhost latency, far below the slow routes' delays.
FAST = FetchOptions(timeout_s=0.3, retries=2, backoff_s=0.01, allow=LOOPBACK)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with serve() as srv:
        yield srv


# --------------------------------------------------------------------------- outcomes


def test_ok_image_downloaded_and_described(server):
    body = jpeg_bytes(32, 24)
    url = server.static("/img/a.jpg", body)
    r = fetch_one(url, FAST)
    assert (r.status, r.reason, r.source) == ("ok", None, "download")
    assert (r.width, r.height, r.format, r.ext) == (32, 24, "JPEG", "jpg")
    assert r.sha256 == hashlib.sha256(body).hexdigest()
    assert r.bytes == len(body) == r.network_bytes
    assert r.data == body
    assert server.hits["/img/a.jpg"] == 1


def test_404_fails_without_retry(server):
    r = fetch_one(server.url("/img/gone.jpg"), FAST)
    assert (r.status, r.reason) == ("failed", "http_404")
    assert r.reason_text.startswith("http_404")
    assert server.hits["/img/gone.jpg"] == 1


def test_500_then_success_is_retried(server):
    url = server.flaky("/img/flaky.jpg", jpeg_bytes(), failures=2)
    r = fetch_one(url, FAST)
    assert r.status == "ok"
    assert r.attempts == 3
    assert server.hits["/img/flaky.jpg"] == 3


def test_persistent_500_gives_up_after_retries(server):
    url = server.flaky("/img/down.jpg", jpeg_bytes(), failures=99, status=503)
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "http_503")
    assert server.hits["/img/down.jpg"] == FAST.retries + 1


def test_slow_response_times_out(server):
    url = server.slow("/img/slow.jpg", jpeg_bytes(), delay=2.0)
    t0 = time.monotonic()
    r = fetch_one(url, FetchOptions(timeout_s=0.3, retries=0, allow=LOOPBACK))
    assert (r.status, r.reason) == ("failed", "timeout")
    assert time.monotonic() - t0 < 1.5


def test_dripping_body_hits_the_transfer_deadline(server):
    url = server.drip("/img/drip.jpg", jpeg_bytes(), every=0.1)
    t0 = time.monotonic()
    r = fetch_one(url, FetchOptions(timeout_s=0.3, retries=0, allow=LOOPBACK))
    assert (r.status, r.reason) == ("failed", "timeout")
    assert "transfer" in r.detail
    assert time.monotonic() - t0 < 2.0


def test_hanging_connection_times_out(server):
    url = server.hang("/img/hang.jpg")
    r = fetch_one(url, FetchOptions(timeout_s=0.3, retries=1, backoff_s=0.01, allow=LOOPBACK))
    assert (r.status, r.reason) == ("failed", "timeout")
    assert server.hits["/img/hang.jpg"] == 2


def test_reset_connection_is_retried_then_fails(server):
    url = server.reset("/img/reset.jpg")
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "connection_error")
    assert server.hits["/img/reset.jpg"] == FAST.retries + 1


def test_connection_refused():
    r = fetch_one(
        f"http://127.0.0.1:{closed_port()}/x.jpg",
        FetchOptions(timeout_s=0.3, retries=0, allow=LOOPBACK),
    )
    assert (r.status, r.reason) == ("failed", "connection_error")


def test_body_shorter_than_content_length_is_truncated(server):
    url = server.short_body("/img/short.jpg", jpeg_bytes(), missing=500)
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "truncated")
    assert server.hits["/img/short.jpg"] == FAST.retries + 1  # a transport fault: retried


def test_cut_jpeg_is_truncated_and_not_retried(server):
    body = jpeg_bytes(64, 64)
    url = server.static("/img/cut.jpg", body[: len(body) // 2])
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "truncated")
    assert server.hits["/img/cut.jpg"] == 1


def test_html_page_is_not_an_image(server):
    url = server.static("/img/captcha.jpg", HTML, ctype="text/html")
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "not_an_image")
    assert "HTML" in r.detail


def test_pixel_bomb_is_rejected_before_decoding(server):
    url = server.static("/img/bomb.png", png_declaring(100_000, 100_000), ctype="image/png")
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("failed", "decompression_bomb")


def test_max_pixels_is_enforced_per_decode(server):
    from PIL import Image as PILImage

    before = PILImage.MAX_IMAGE_PIXELS
    url = server.static("/img/big.png", png_declaring(3000, 3000), ctype="image/png")
    r = fetch_one(url, FetchOptions(max_pixels=1_000_000, retries=0, allow=LOOPBACK))
    assert (r.status, r.reason) == ("failed", "decompression_bomb")
    assert "max_pixels 1000000" in r.detail
    # The same bytes pass a looser limit's header check (then fail as corrupt: no real pixels).
    r2 = fetch_one(url, FetchOptions(max_pixels=10_000_000, retries=0, allow=LOOPBACK))
    assert r2.reason in ("truncated", "corrupt")
    assert before == PILImage.MAX_IMAGE_PIXELS, "Pillow's global limit must not be touched"


def test_size_limit_from_content_length_and_while_streaming(server):
    body = jpeg_bytes(200, 200)
    opts = FetchOptions(max_bytes=len(body) - 1, retries=0, allow=LOOPBACK)
    r = fetch_one(server.static("/img/large.jpg", body), opts)
    assert (r.status, r.reason) == ("failed", "too_large")
    assert "Content-Length" in r.detail
    r = fetch_one(server.unsized("/img/large-unsized.jpg", body), opts)
    assert (r.status, r.reason) == ("failed", "too_large")
    assert r.network_bytes <= opts.max_bytes + 1
    # Without a limit problem, an unsized body is fine.
    assert fetch_one(server.unsized("/img/ok-unsized.jpg", body), FAST).status == "ok"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "http:///no-host.jpg",
        "//example.com/a.jpg",
        "a.jpg",
        "http://example.com/a\nb.jpg",
    ],
)
def test_unsafe_urls_are_refused_without_io(url):
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("refused", "unsafe_url")
    assert r.network_bytes == 0


@pytest.mark.parametrize("url", [None, "", "   ", float("nan")])
def test_no_url_is_missing(url):
    r = fetch_one(url, FAST)
    assert (r.status, r.reason) == ("missing", "no_url")


def test_redirects_followed_only_to_http(server):
    body = jpeg_bytes()
    server.static("/img/target.jpg", body)
    ok = fetch_one(server.redirect("/r/ok", "/img/target.jpg"), FAST)
    assert ok.status == "ok" and ok.sha256 == hashlib.sha256(body).hexdigest()
    bad = fetch_one(server.redirect("/r/file", "file:///etc/passwd"), FAST)
    assert (bad.status, bad.reason) == ("refused", "unsafe_url")


def test_other_formats_decode_and_tiff_is_not_accepted():
    for fmt, ext in (("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")):
        buf = io.BytesIO()
        Image.new("RGB", (7, 5), (9, 9, 9)).save(buf, format=fmt)
        assert decode_image(buf.getvalue(), 1000) == (fmt, 7, 5), ext
    buf = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buf, format="TIFF")
    with pytest.raises(FetchError) as err:
        decode_image(buf.getvalue(), 1000)
    assert err.value.reason == "not_an_image"


def test_iter_fetch_bounds_concurrency_and_returns_every_url(server):
    body = jpeg_bytes()
    urls = [server.gauge(f"/img/g{i}.jpg", body, hold=0.05) for i in range(16)]
    urls.append(server.url("/img/missing.jpg"))
    results = list(iter_fetch(urls, FAST, concurrency=3))
    assert sorted(r.url for r in results) == sorted(urls)
    assert Counter(r.status for r in results) == {"ok": 16, "failed": 1}
    assert 1 <= server.max_in_flight <= 3


def test_iter_fetch_records_storage_failures_instead_of_raising(server):
    url = server.static("/img/a.jpg", jpeg_bytes())

    def broken_store(result):
        raise OSError("disk full")

    (r,) = list(iter_fetch([url], FAST, concurrency=2, process=broken_store))
    assert (r.status, r.reason) == ("failed", "internal_error")
    assert "disk full" in r.detail and r.data is None
