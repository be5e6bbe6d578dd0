"""The ASGI app of ``catret serve`` (Starlette): the JSON API, the images and the page.

Endpoints are plain (sync) functions, so Starlette runs them in its thread pool: a search is
numpy / torch work that releases the GIL, and one slow encode does not stall the event loop.
Every request reads one snapshot, taken once at its start (``store.snapshot``).
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources

# anyio imports the module behind `anyio.open_file` lazily, at the first image a FileResponse
# sends, i.e. in a request thread while other threads import too. Two threads compiling at once
# can trip CPython 3.11's parser ("AST constructor recursion depth mismatch", seen when the
# module is compiled from source): the import is done here, when the app is imported, instead.
from anyio import open_file as _open_file  # noqa: F401
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from catret_pipeline.serving import payloads
from catret_pipeline.serving.images import CACHE_CONTROL, resolve_image
from catret_pipeline.serving.openapi import openapi_document
from catret_pipeline.serving.query import QueryError, parse_k
from catret_pipeline.serving.store import Store, category_page, search, view_of
from catret_pipeline.storage.artefacts import is_remote, read_bytes

log = logging.getLogger("catret.serving")

#: Default number of products on a category page (the issue's K).
CATEGORY_PAGE_K = 50
#: Headers every response gets; the page uses no external resource, so it may forbid them all.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'"
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _store(request: Request) -> Store:
    return request.app.state.store


def health(request: Request) -> Response:
    store = _store(request)
    return JSONResponse(payloads.health(store.snapshot, store.reloads, store.last_reload_error))


def api_search(request: Request) -> Response:
    snap = _store(request).snapshot
    q = request.query_params
    setting = q.get("setting") or None
    res = search(snap, q.get("q", ""), q.get("k"), setting)
    view = view_of(snap, res.setting)
    return JSONResponse(payloads.results(res, view, snap, _root(request)))


def api_categories(request: Request) -> Response:
    snap = _store(request).snapshot
    view = view_of(snap, request.query_params.get("setting") or None)
    return JSONResponse(payloads.tree(snap, view))


def api_category(request: Request) -> Response:
    snap = _store(request).snapshot
    node_id = request.path_params["node_id"]
    node = snap.nodes_by_id.get(node_id)
    if node is None:
        raise QueryError(f"unknown category node {node_id[:40]!r}", status=404)
    q = request.query_params
    k = parse_k(q.get("k"), default=CATEGORY_PAGE_K)
    res = category_page(snap, node, k, q.get("setting") or None)
    view = view_of(snap, res.setting)
    children = [payloads.node(n, view) for n in snap.nodes if n.parent_id == node.node_id]
    body = payloads.results(res, view, snap, _root(request))
    return JSONResponse({"node": payloads.node(node, view), "children": children, **body})


def image(request: Request) -> Response:
    found = resolve_image(_store(request).snapshot, request.path_params["path"])
    if found is None:
        return _error(404, "no such image")
    path, media = found
    headers = {"Cache-Control": CACHE_CONTROL}
    if is_remote(path):
        return Response(read_bytes(path), media_type=media, headers=headers)
    return FileResponse(path, media_type=media, headers=headers)


def page(request: Request) -> Response:
    html = resources.files("catret_pipeline.serving").joinpath("page.html").read_text("utf-8")
    return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP})


def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _query_error(request: Request, exc: QueryError) -> Response:
    return _error(exc.status, str(exc))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return _error(exc.status_code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged in full here; the client gets no traceback and no internals.
    log.exception("unexpected error on %s", request.url.path)
    return _error(500, "internal error")


class SecurityHeaders:
    """Pure ASGI middleware (no per-request task like BaseHTTPMiddleware): adds the headers."""

    def __init__(self, app) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                have = {k for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.extra if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(store: Store, *, watch: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        if watch:
            store.start_watching()
        try:
            yield
        finally:
            store.stop_watching()

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/api/search", api_search, methods=["GET"]),
            Route("/api/categories", api_categories, methods=["GET"]),
            Route("/api/categories/{node_id}", api_category, methods=["GET"]),
            Route("/images/{path:path}", image, methods=["GET"]),
        ],
        exception_handlers={
            QueryError: _query_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.store = store
    return app
