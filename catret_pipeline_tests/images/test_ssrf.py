"""The SSRF guard: image downloads reach only public addresses unless the allow-list says so.

The address policy is tested as the pure function it is; the connection guard against real
HTTP servers on 127.0.0.1 / 127.0.0.2 (the whole 127/8 is loopback, so a second server there
stands in for "some other internal address" a redirect may point at).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import ipaddress
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from catret_pipeline import config as catret_config
from catret_pipeline.images import guard
from catret_pipeline.images.addresses import AllowList, address_refusal, host_refusal
from catret_pipeline.images.assets import ASSETS as IMAGE_ASSETS
from catret_pipeline.images.fetch import FetchOptions, fetch_one
from catret_pipeline.images.resources import ImageFetcher
from catret_pipeline.ingest.assets import ASSETS as INGEST_ASSETS
from catret_pipeline.ingest.resources import XMarketSource
from catret_pipeline.storage.io_manager import ParquetIOManager
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.images.test_fetch import jpeg_bytes, serve

LOCAL = AllowList.parse(["127.0.0.1"])
QUICK = {"timeout_s": 1.0, "retries": 0}

# --------------------------------------------------------------------------- pure policy


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud instance metadata
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "private"),
        ("fdff:ffff::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:10.1.2.3", "private"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
    ],
)
def test_non_public_addresses_are_refused(address, kind):
    assert address_refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "172.32.0.1", "192.169.0.1", "2606:4700:4700::1111"]
)
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address("240.0.0.1")) is not None  # future use
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allow_list_parsing_and_matching():
    allow = AllowList.parse("Images.LAN., 10.0.0.0/8  ::1 192.168.1.7")
    assert allow.hosts == {"images.lan"}
    assert allow.allows_host("images.lan") and allow.allows_host("IMAGES.lan.")
    assert not allow.allows_host("evil.lan")
    for ok in ("10.9.8.7", "::1", "192.168.1.7", "::ffff:10.0.0.1"):
        assert allow.allows_address(ipaddress.ip_address(ok)), ok
    for no in ("192.168.1.8", "127.0.0.1", "fc00::1"):
        assert not allow.allows_address(ipaddress.ip_address(no)), no
    assert AllowList.parse(["*"]).allows_address(ipaddress.ip_address("127.0.0.1"))
    assert AllowList.parse("") == AllowList()
    for bad in ("10.0.0.0/33", "http://x/", "a b/c", "host:80"):
        with pytest.raises(ValueError, match="allow-list entry"):
            AllowList.parse([bad])


def test_every_resolved_address_must_pass():
    none = AllowList()
    assert host_refusal("cdn.example", ["93.184.216.34"], none) is None
    # One private address among public ones is enough to refuse the name.
    why = host_refusal("cdn.example", ["93.184.216.34", "10.0.0.5"], none)
    assert why is not None and why.startswith("10.0.0.5 is private (host 'cdn.example')")
    assert "CATRET_IMAGE_ALLOW_HOSTS" in why
    assert host_refusal("cdn.example", ["10.0.0.5"], AllowList.parse("10.0.0.0/24")) is None
    assert host_refusal("cdn.example", ["10.0.0.5"], AllowList.parse("cdn.example")) is None
    assert host_refusal("x", ["fe80::1%eth0"], none).startswith("fe80::1 is link-local")


# --------------------------------------------------------------------------- real HTTP


def test_loopback_is_refused_by_default_without_a_request():
    with serve() as srv:
        url = srv.static("/img/a.jpg", jpeg_bytes())
        r = fetch_one(url, FetchOptions(**QUICK))
        assert (r.status, r.reason) == ("refused", "refused_address")
        assert r.detail.startswith("127.0.0.1 is loopback")
        assert r.network_bytes == 0 and srv.total_hits() == 0


def test_a_name_resolving_to_loopback_is_refused():
    with serve() as srv:
        srv.static("/img/a.jpg", jpeg_bytes())
        r = fetch_one(f"http://localhost:{srv.port}/img/a.jpg", FetchOptions(**QUICK))
        assert (r.status, r.reason) == ("refused", "refused_address")
        assert "is loopback (host 'localhost')" in r.detail
        assert srv.total_hits() == 0


@pytest.mark.parametrize("host", ["[::1]", "0x7f000001", "2130706433", "127.1", "0.0.0.0"])
def test_other_spellings_of_this_machine_are_refused(host):
    # Judged on what the name resolves to, not on how the URL spells it.
    with serve() as srv:
        srv.static("/img/a.jpg", jpeg_bytes())
        r = fetch_one(f"http://{host}:{srv.port}/img/a.jpg", FetchOptions(**QUICK))
        assert (r.status, r.reason) == ("refused", "refused_address"), r.detail
        assert srv.total_hits() == 0


def test_through_a_proxy_the_target_is_still_checked(monkeypatch):
    # The "proxy" is a real server on 127.0.0.1 that answers any path; urllib sends it the
    # full target URL. The target is checked first; the proxy itself is the operator's.
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with serve() as proxy:
        body = jpeg_bytes(seed=4)
        proxy.routes["*"] = lambda h, _hit: h.send_body(body)
        monkeypatch.setenv("http_proxy", proxy.url(""))
        allow = AllowList.parse("images.proxied-test.lan")  # its own opener, built after setenv
        refused = fetch_one("http://10.1.2.3/a.jpg", FetchOptions(allow=allow, **QUICK))
        assert (refused.status, refused.reason) == ("refused", "refused_address")
        assert proxy.total_hits() == 0
        ok = fetch_one("http://images.proxied-test.lan/a.jpg", FetchOptions(allow=allow, **QUICK))
        assert ok.status == "ok" and ok.sha256 == hashlib.sha256(body).hexdigest()
        assert proxy.hits["http://images.proxied-test.lan/a.jpg"] == 1


def test_allow_list_opens_a_private_image_server():
    with serve() as srv:
        body = jpeg_bytes()
        url = srv.static("/img/a.jpg", body)
        by_address = fetch_one(url, FetchOptions(allow=LOCAL, **QUICK))
        assert by_address.status == "ok" and by_address.sha256 == hashlib.sha256(body).hexdigest()
        by_name = fetch_one(
            f"http://localhost:{srv.port}/img/a.jpg",
            FetchOptions(allow=AllowList.parse("localhost"), **QUICK),
        )
        assert by_name.status == "ok"
        assert srv.hits["/img/a.jpg"] == 2


def test_redirect_from_an_allowed_server_to_a_refused_address_is_not_followed():
    with serve() as allowed, serve("127.0.0.2") as internal:
        internal.static("/secret.jpg", jpeg_bytes(seed=7))
        target = internal.url("/secret.jpg")
        url = allowed.redirect("/r", target)
        r = fetch_one(url, FetchOptions(allow=LOCAL, **QUICK))
        assert (r.status, r.reason) == ("refused", "refused_address")
        assert r.detail.startswith(f"redirect to {target}: 127.0.0.2 is loopback")
        assert allowed.hits["/r"] == 1 and internal.total_hits() == 0
        # Allowing the second address too lets the same redirect through.
        both = AllowList.parse(["127.0.0.1", "127.0.0.2"])
        assert fetch_one(url, FetchOptions(allow=both, **QUICK)).status == "ok"
        assert internal.hits["/secret.jpg"] == 1


def test_connection_goes_to_the_checked_address_not_a_new_lookup():
    # The host name does not resolve at all: the request can only succeed by connecting to
    # the address that was checked, which is what defeats DNS rebinding.
    with serve() as srv:
        body = jpeg_bytes()
        srv.static("/img/a.jpg", body)
        conn = guard._PinnedHTTP("images.invalid", srv.port, timeout=2, addresses=["127.0.0.1"])
        try:
            conn.request("GET", "/img/a.jpg")
            assert conn.getresponse().read() == body
        finally:
            conn.close()
        with pytest.raises(OSError):
            plain = http.client.HTTPConnection("images.invalid", srv.port, timeout=2)
            plain.request("GET", "/img/a.jpg")


def test_resource_and_setting_declare_the_allow_list(monkeypatch):
    assert ImageFetcher().options().allow == AllowList()
    opts = ImageFetcher(allow_hosts=["127.0.0.1", "images.lan"]).options()
    assert opts.allow == AllowList.parse("127.0.0.1 images.lan")
    with pytest.raises(ValueError, match="allow-list entry"):
        ImageFetcher(allow_hosts=["10.0.0.0/33"]).options()
    monkeypatch.delenv(catret_config.ENV_IMAGE_ALLOW_HOSTS, raising=False)
    assert list(catret_config.CatretConfig.from_env().image_allow_hosts) == []
    monkeypatch.setenv(catret_config.ENV_IMAGE_ALLOW_HOSTS, "127.0.0.1, images.lan")
    assert list(catret_config.CatretConfig.from_env().image_allow_hosts) == [
        "127.0.0.1",
        "images.lan",
    ]
    monkeypatch.setenv(catret_config.ENV_IMAGE_ALLOW_HOSTS, "10.0.0.0/33")
    with pytest.raises(catret_config.ConfigError, match="CATRET_IMAGE_ALLOW_HOSTS"):
        catret_config.CatretConfig.from_env()


# --------------------------------------------------------------------------- end to end


def _catalogue(root: Path, images: dict[str, object]) -> None:
    path = root / "us" / "Electronics" / "metadata_us_Electronics.json.gz"
    path.parent.mkdir(parents=True)
    lines = [
        json.dumps(
            {"asin": asin, "title": f"Product {asin}", "categories": ["E", "Audio"], "imgUrl": img}
        )
        for asin, img in images.items()
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))


def test_refused_urls_keep_their_products_and_counts_reconcile(tmp_path):
    root, data = tmp_path / "xmarket", tmp_path / "data"
    with serve() as srv:
        loopback = srv.static("/img/a.jpg", jpeg_bytes())
        images = {
            "FILE_STR": "file:///etc/passwd",  # plain-string form
            "FILE_DICT": json.dumps({"file:///etc/passwd": [100, 100]}),  # XMarket dict form
            "JS_STR": "javascript:alert(1)",
            "LOOPBACK": json.dumps({loopback: [100, 100]}),
            "NONE": "[]",
        }
        _catalogue(root, images)
        result = dg.materialize(
            [*INGEST_ASSETS, *IMAGE_ASSETS],
            resources={
                "io_manager": ParquetIOManager(data_dir=str(data)),
                "storage": CatretStorage(data_dir=str(data)),
                "xmarket": XMarketSource(root=str(root)),
                "image_fetcher": ImageFetcher(mirror_dir="", **QUICK),
            },
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        assert srv.total_hits() == 0

    quarantine = pl.read_parquet(data / "assets" / "quarantine.parquet")
    assert quarantine.height == 0, quarantine.to_dicts()
    products = pl.read_parquet(data / "assets" / "products.parquet")
    assert set(products["asin"]) == set(images)
    rows = {
        r["asin"]: r for r in pl.read_parquet(data / "assets" / "product_images.parquet").to_dicts()
    }
    assert len(rows) == products.height
    for asin in ("FILE_STR", "FILE_DICT"):
        assert rows[asin]["image_url"] == "file:///etc/passwd"
        assert rows[asin]["status"] == "refused"
        assert rows[asin]["reason"].startswith("unsafe_url: scheme 'file'")
    assert rows["JS_STR"]["status"] == "refused"
    assert rows["LOOPBACK"]["image_url"] == loopback
    assert rows["LOOPBACK"]["status"] == "refused"
    assert rows["LOOPBACK"]["reason"].startswith("refused_address: 127.0.0.1 is loopback")
    assert rows["NONE"]["status"] == "missing"

    (mat,) = result.asset_materializations_for_node("product_images")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["n_ok"], meta["n_missing"], meta["n_failed"], meta["n_refused"]) == (0, 1, 0, 4)
    assert meta["n_ok"] + meta["n_missing"] + meta["n_failed"] + meta["n_refused"] == len(rows)
