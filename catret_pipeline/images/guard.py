"""urllib handlers that check where each HTTP(S) connection goes before making it.

The check happens at connect time, inside the opener, so it covers the first request and every
redirect hop alike (a public URL answering ``302 Location: http://127.0.0.1/`` is refused when
the hop is opened). The host is resolved once, *all* its addresses are checked with
:func:`~.addresses.host_refusal`, and the socket is then connected to one of those checked
addresses, never re-resolved: a DNS answer that changes between the check and the connect
(DNS rebinding) cannot redirect the connection. HTTPS still verifies the certificate against
the host name (SNI and ``check_hostname`` use the name, not the address).

Through a proxy (``http_proxy`` / ``https_proxy``) the socket goes to the proxy, which the
operator configured and which resolves the target itself; the target is still resolved and
checked here first, but pinning is then up to the proxy.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.parse
import urllib.request

from catret_pipeline.images.addresses import AllowList, host_refusal


class RefusedAddress(Exception):
    """The target resolves to an address the allow-list does not permit; nothing was sent."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(detail)
        self.url = url
        self.detail = detail


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection (``OSError`` if none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _connect_any(addresses: list[str], port: int, timeout, source_address) -> socket.socket:
    """``socket.create_connection`` over already-checked addresses, in resolver order."""
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout, source_address)
        except OSError as exc:
            error = exc
    raise error or OSError(f"no address to connect to (port {port})")


def _pinned(connection_class: type[http.client.HTTPConnection]):
    class Pinned(connection_class):
        """Connects to the checked addresses instead of resolving ``self.host`` again."""

        def __init__(self, *args, addresses: list[str] | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if addresses is not None:
                self._create_connection = lambda addr, timeout, source: _connect_any(
                    addresses, addr[1], timeout, source
                )

    Pinned.__name__ = f"Pinned{connection_class.__name__}"
    return Pinned


_PinnedHTTP = _pinned(http.client.HTTPConnection)
_PinnedHTTPS = _pinned(http.client.HTTPSConnection)
_PINNED = {http.client.HTTPConnection: _PinnedHTTP, http.client.HTTPSConnection: _PinnedHTTPS}


def checked_addresses(req: urllib.request.Request, allow: AllowList) -> list[str] | None:
    """The target's checked addresses (``None`` when the allow-list names the host or is ``*``).

    Raises :class:`RefusedAddress`, or ``OSError`` when the name does not resolve.
    """
    parts = urllib.parse.urlsplit(req.full_url)
    host = parts.hostname or ""
    if allow.allows_host(host):
        return None
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    addresses = resolve(host, port)
    refusal = host_refusal(host, addresses, allow)
    if refusal is not None:
        hop = f"redirect to {req.full_url}: " if hasattr(req, "redirect_dict") else ""
        raise RefusedAddress(req.full_url, hop + refusal)
    return addresses


def _proxied(req: urllib.request.Request) -> bool:
    # urllib's own markers: set_proxy() makes the selector the full URL (plain http) or sets a
    # tunnel host (https via CONNECT).
    return req.has_proxy() or getattr(req, "_tunnel_host", None) is not None


class _Guarded:
    """Mixin over urllib's handlers: their ``*_open`` call ``do_open(connection_class, req,
    **version_specific_kwargs)``; intercepting there keeps those kwargs whatever the Python."""

    allow: AllowList

    def do_open(self, http_class, req, **kwargs):
        try:
            addresses = checked_addresses(req, self.allow)
        except OSError as exc:
            # Same shape as urllib's own resolver failures, so callers classify it as before.
            raise urllib.error.URLError(exc) from None
        if _proxied(req):
            addresses = None  # the socket goes to the proxy, not the (checked) target
        return super().do_open(_PINNED[http_class], req, addresses=addresses, **kwargs)


class GuardedHTTPHandler(_Guarded, urllib.request.HTTPHandler):
    def __init__(self, allow: AllowList) -> None:
        super().__init__()
        self.allow = allow


class GuardedHTTPSHandler(_Guarded, urllib.request.HTTPSHandler):
    def __init__(self, allow: AllowList) -> None:
        super().__init__()
        self.allow = allow
