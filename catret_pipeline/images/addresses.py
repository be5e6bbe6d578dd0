"""Which network addresses an image download may connect to (the SSRF guard's policy).

Image URLs come from the catalogue, i.e. from whoever wrote it. Without a guard, a URL (or a
redirect) naming ``127.0.0.1``, ``169.254.169.254`` (cloud metadata) or a LAN host makes the
pipeline fetch from the machine's own network and store what it got. So by default only
globally routable unicast addresses are allowed; an operator with a private image server opts
in with an allow-list of host names and IP networks (``CATRET_IMAGE_ALLOW_HOSTS`` /
``image_fetcher.allow_hosts``).

Everything here is pure: no I/O, no DNS. :mod:`.guard` resolves and connects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Where the opt-in is documented; quoted in every refusal so the row says how to allow it.
ALLOW_HINT = "not in CATRET_IMAGE_ALLOW_HOSTS"

_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be connected to by default (``None``: a public unicast address).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as the IPv4 address it maps,
    since that is where the connection ends up.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped)
    # Order matters only for the message: the most specific name first.
    for kind, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if hit:
            return kind
    if not ip.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        return "not globally routable"
    return None


def normalise_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot: the form both URLs and the allow-list use."""
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks a download may reach although they are not public.

    ``hosts``: exact host names (case-insensitive); a listed name is allowed whatever it
    resolves to, since the operator vouches for it. ``networks``: addresses inside them are
    allowed whatever name led there. ``everything``: the entry ``*``, which turns the guard off.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    everything: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str] | str) -> AllowList:
        """From entries such as ``images.lan``, ``10.0.0.0/8``, ``127.0.0.1``, ``::1``, ``*``.

        A string is split on commas and white space. Raises ``ValueError`` naming the entry.
        """
        if isinstance(entries, str):
            entries = re.split(r"[,\s]+", entries)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        everything = False
        for raw in entries:
            entry = normalise_host(raw)
            if not entry:
                continue
            if entry == "*":
                everything = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or ":" in entry or not _HOST_NAME.match(entry):
                raise ValueError(
                    f"image allow-list entry {raw.strip()!r} is neither a host name, an IP "
                    "address nor a CIDR network (e.g. images.lan, 10.0.0.0/8, 127.0.0.1)"
                )
            hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks), everything)

    def allows_host(self, host: str) -> bool:
        return self.everything or normalise_host(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        if self.everything:
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if mapped is not None and self.allows_address(mapped):
            return True
        return any(ip.version == net.version and ip in net for net in self.networks)


def host_refusal(host: str, addresses: Iterable[str], allow: AllowList) -> str | None:
    """Why a connection to ``host`` resolving to ``addresses`` is refused, else ``None``.

    Every address must pass, not just the first: a name that resolves to a public and a
    private address could otherwise be connected to the private one by a retry or a
    different resolver order.
    """
    if allow.allows_host(host):
        return None
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
        kind = address_refusal(ip)
        if kind is not None and not allow.allows_address(ip):
            shown = "" if normalise_host(host) == str(ip) else f" (host {host!r})"
            return f"{ip} is {kind}{shown}; {ALLOW_HINT}"
    return None
