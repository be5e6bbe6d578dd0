"""The seeded sample catalogue: XMarket layout, broken-line ground truth, images, idempotence."""

from __future__ import annotations

import ast
import gzip
import io
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catret_pipeline.sample import (
    BROKEN_KINDS,
    MANIFEST_NAME,
    SampleSummary,
    ensure_sample,
    generate_sample,
    normalise_params,
    tree_leaves,
)
from catret_pipeline.sample import generator as gen_module

SMALL = {"n_products": 150, "image_size": 32}
FILE_RE = re.compile(r"^(?P<m>[a-z]{2})/(?P<c>[A-Za-z_]+)/metadata_(?P=m)_(?P=c)\.json\.gz$")
ASIN_RE = re.compile(r"^B0[A-Z0-9]{8}$")
URL_RE = re.compile(
    r"^https://m\.media-amazon\.com/images/I/(?P<id>[A-Za-z0-9-]{11})\._AC_S[XY]\d+_\.(jpg|png)$"
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    return generate_sample(tmp_path_factory.mktemp("sample") / "s", **SMALL)


def _read_lines(path: Path) -> tuple[list[bytes], bool]:
    """All complete lines of a gzip file and whether the stream ended cleanly."""
    lines: list[bytes] = []
    try:
        with gzip.open(path, "rb") as fh:
            for raw in fh:
                lines.append(raw.rstrip(b"\n"))
    except EOFError:
        return lines, False
    return lines, True


def _classify(raw: bytes) -> tuple[dict | None, str | None]:
    """A strict reference reader: (record, None) or (None, quarantine reason)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        rec = json.loads(text)
    except ValueError:
        try:
            rec = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None, "invalid_json"
    if not isinstance(rec, dict):
        return None, "invalid_json"
    if "asin" not in rec:
        return None, "missing_asin"
    if "title" not in rec:
        return None, "missing_title"
    if "categories" not in rec:
        return None, "missing_categories"
    if not isinstance(rec["title"], str):
        return None, "wrong_type:title"
    if not isinstance(rec["categories"], list):
        return None, "wrong_type:categories"
    return rec, None


def _ingest(summary: SampleSummary) -> dict:
    """Read the sample as the ingestion would, in sorted file order, first copy wins."""
    products: dict[str, dict] = {}
    rejected: list[tuple[str, int, str]] = []
    n_lines = 0
    gzip_ok: dict[str, bool] = {}
    all_records: list[tuple[str, int, dict]] = []
    root = summary.xmarket_dir
    for path in sorted(root.rglob("*.json.gz")):
        rel = path.relative_to(root).as_posix()
        lines, ok = _read_lines(path)
        gzip_ok[rel] = ok
        for no, raw in enumerate(lines, start=1):
            n_lines += 1
            rec, reason = _classify(raw)
            if rec is None:
                rejected.append((rel, no, reason))
                continue
            all_records.append((rel, no, rec))
            if rec["asin"] in products:
                rejected.append((rel, no, "duplicate_asin"))
            else:
                products[rec["asin"]] = rec
    return {
        "products": products,
        "rejected": rejected,
        "n_lines": n_lines,
        "gzip_ok": gzip_ok,
        "records": all_records,
    }


@pytest.fixture(scope="module")
def ingested(sample: SampleSummary) -> dict:
    return _ingest(sample)


def test_layout_matches_xmarket(sample: SampleSummary) -> None:
    files = sorted(
        p.relative_to(sample.xmarket_dir).as_posix()
        for p in sample.xmarket_dir.rglob("*")
        if p.is_file()
    )
    assert files == [f["file"] for f in sample.files]
    assert all(FILE_RE.match(f) for f in files), files
    categories = {FILE_RE.match(f)["c"] for f in files}
    assert {
        "Electronics",
        "Home_and_Kitchen",
        "Sports_and_Outdoors",
        "Toys_and_Games",
    } <= categories
    assert {FILE_RE.match(f)["m"] for f in files} == {"us", "uk"}
    assert "uk/Office_Products/metadata_uk_Office_Products.json.gz" in files
    for f in files:
        head = (sample.xmarket_dir / f).read_bytes()[:10]
        # gzip magic, no FNAME/FEXTRA flags, mtime 0: bytes depend on content only
        assert head[:3] == b"\x1f\x8b\x08" and head[3] == 0 and head[4:8] == b"\0\0\0\0"
    assert (sample.out_dir / MANIFEST_NAME).exists()
    assert json.loads((sample.out_dir / "broken_lines.json").read_text()) == sample.broken_lines


def test_counts_match_a_reference_reader(sample: SampleSummary, ingested: dict) -> None:
    assert len(ingested["products"]) == sample.n_products == 150
    assert ingested["n_lines"] == sample.n_lines
    assert sample.n_lines == sample.n_products + sample.n_rejected_lines
    assert len(ingested["rejected"]) == sample.n_rejected_lines
    paths = [tuple(p["categories"]) for p in ingested["products"].values()]
    nodes = {p[:d] for p in paths for d in range(1, len(p) + 1)}
    parents = {n[:-1] for n in nodes}
    assert sample.n_categories == len(nodes)
    assert sample.n_leaves == len(nodes - parents)
    assert sample.n_roots == len({p[0] for p in paths}) == 5


def test_every_broken_kind_is_present_and_exact(sample: SampleSummary, ingested: dict) -> None:
    kinds = [b["kind"] for b in sample.broken_lines]
    assert sorted(kinds) == sorted(BROKEN_KINDS)
    expected = {
        (b["file"], b["line_no"], b["expected_reason"])
        for b in sample.broken_lines
        if b["expected_reason"] is not None and b["kind"] != "corrupt_gzip"
    }
    got = set(ingested["rejected"])
    cross = {r for r in got if r[2] == "duplicate_asin" and r not in expected}
    assert got - cross == expected
    assert len(cross) == len(sample.cross_market_asins)

    corrupt = next(b for b in sample.broken_lines if b["kind"] == "corrupt_gzip")
    assert ingested["gzip_ok"][corrupt["file"]] is False
    assert [f for f, ok in ingested["gzip_ok"].items() if not ok] == [corrupt["file"]]
    lines, _ = _read_lines(sample.xmarket_dir / corrupt["file"])
    assert len(lines) == corrupt["line_no"] - 1
    assert all(json.loads(line)["asin"] for line in lines)


def test_python_literal_line_is_a_real_product(sample: SampleSummary, ingested: dict) -> None:
    entry = next(b for b in sample.broken_lines if b["kind"] == "python_literal")
    lines, _ = _read_lines(sample.xmarket_dir / entry["file"])
    raw = lines[entry["line_no"] - 1].decode("utf-8")
    assert raw.startswith("{'asin': '")
    with pytest.raises(ValueError):
        json.loads(raw)
    rec = ast.literal_eval(raw)
    assert rec["asin"] == entry["asin"] and entry["asin"] in ingested["products"]
    assert isinstance(rec["categories"], list) and isinstance(
        json.loads(rec["imgUrl"]), dict | list
    )


def test_invalid_utf8_line_is_latin1_json(sample: SampleSummary) -> None:
    entry = next(b for b in sample.broken_lines if b["kind"] == "invalid_utf8")
    lines, _ = _read_lines(sample.xmarket_dir / entry["file"])
    raw = lines[entry["line_no"] - 1]
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    rec = json.loads(raw.decode("latin-1"))
    assert rec["asin"] == entry["asin"] and rec["title"].startswith("Café ")


def test_records_look_like_xmarket(ingested: dict) -> None:
    no_image = with_image = 0
    for _, _, rec in ingested["records"]:
        assert ASIN_RE.match(rec["asin"])
        assert 2 <= len(rec["categories"]) <= 6
        assert all(isinstance(c, str) and c for c in rec["categories"])
        assert isinstance(rec["features"], list) and all(
            isinstance(f, str) for f in rec["features"]
        )
        details = rec["productDetails"]
        assert "Manufacturer" in details
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in details.items())
        assert isinstance(rec["description"], str) and isinstance(rec["price"], str)
        assert isinstance(rec["averageRating"], float) and isinstance(rec["ratingCount"], int)
        assert {"amazon_badge", "related", "ratingDist", "sellerPage"} <= rec.keys()
        assert isinstance(rec["imgUrl"], str)
        urls = json.loads(rec["imgUrl"])
        if urls == []:
            no_image += 1
            continue
        with_image += 1
        assert isinstance(urls, dict) and 2 <= len(urls) <= 3
        ids = set()
        for url, hw in urls.items():
            m = URL_RE.match(url)
            assert m, url
            ids.add(m["id"])
            assert len(hw) == 2 and all(isinstance(x, int) and x > 0 for x in hw)
        assert len(ids) == 1
    assert no_image >= 1 and with_image > 10 * no_image


def test_mirror_has_every_image_and_it_decodes(sample: SampleSummary, ingested: dict) -> None:
    formats = set()
    for rec in ingested["products"].values():
        urls = json.loads(rec["imgUrl"])
        if not urls:
            continue
        largest = max(urls, key=lambda u: urls[u][0] * urls[u][1]).rsplit("/", 1)[1]
        path = sample.images_dir / largest
        assert path.exists(), largest
        with Image.open(path) as im:
            im.load()
            assert im.size == (32, 32)
            formats.add(im.format)
    assert formats == {"JPEG", "PNG"}
    assert len(list(sample.images_dir.iterdir())) == sample.n_images


def test_same_name_under_different_parents(ingested: dict) -> None:
    parents: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for rec in ingested["products"].values():
        path = tuple(rec["categories"])
        for d in range(1, len(path)):
            parents[path[d]].add(path[:d])
    repeated = {name for name, ps in parents.items() if len(ps) >= 2}
    assert "Accessories" in repeated
    assert len(repeated) >= 3


def test_tree_shape() -> None:
    leaves = tree_leaves()
    assert 50 <= len(leaves) <= 80
    assert {len(leaf.path) for leaf in leaves} >= {2, 3, 4, 5, 6}
    assert len({leaf.root for leaf in leaves}) == 5
    assert len({leaf.path for leaf in leaves}) == len(leaves)


def test_cross_market_copies_differ_only_slightly(ingested: dict, sample: SampleSummary) -> None:
    by_asin: dict[str, dict[str, dict]] = defaultdict(dict)
    for rel, _, rec in ingested["records"]:
        by_asin[rec["asin"]][rel.split("/")[0]] = rec
    assert sample.cross_market_asins
    for asin in sample.cross_market_asins:
        copies = by_asin[asin]
        assert set(copies) == {"us", "uk"}
        assert copies["us"]["title"] != copies["uk"]["title"]
        assert copies["us"]["categories"] == copies["uk"]["categories"]
        assert copies["us"]["imgUrl"] == copies["uk"]["imgUrl"]


def test_titles_carry_imperfect_category_signal(ingested: dict) -> None:
    hits = 0
    products = list(ingested["products"].values())
    for rec in products:
        words = set(re.findall(r"[a-z]+", rec["title"].lower()))
        names = " ".join(rec["categories"][1:]).lower()
        cat_words = {w.rstrip("s") for w in re.findall(r"[a-z]{3,}", names)} - {"and", "accessorie"}
        hits += bool({w.rstrip("s") for w in words} & cat_words)
    share = hits / len(products)
    assert 0.3 < share < 0.95, share


def _features(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32).ravel()


def test_image_content_depends_on_category(sample: SampleSummary, ingested: dict) -> None:
    by_leaf: dict[tuple[str, ...], list[np.ndarray]] = defaultdict(list)
    for rec in ingested["products"].values():
        urls = json.loads(rec["imgUrl"])
        if urls:
            name = max(urls, key=lambda u: urls[u][0] * urls[u][1]).rsplit("/", 1)[1]
            by_leaf[tuple(rec["categories"])].append(_features(sample.images_dir / name))
    groups = [np.stack(v) for v in by_leaf.values() if len(v) >= 3]
    assert len(groups) >= 5
    within = np.mean([np.linalg.norm(g - g.mean(0), axis=1).mean() for g in groups])
    centroids = np.stack([g.mean(0) for g in groups])
    diffs = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    between = diffs[np.triu_indices(len(groups), 1)].mean()
    assert between > 1.5 * within, (between, within)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deterministic_bytes(tmp_path: Path, sample: SampleSummary) -> None:
    again = generate_sample(tmp_path / "again", **SMALL)
    assert _tree_bytes(again.out_dir) == _tree_bytes(sample.out_dir)
    other = generate_sample(tmp_path / "other", seed=1, **SMALL)
    a, b = _tree_bytes(other.out_dir), _tree_bytes(sample.out_dir)
    assert (
        a["xmarket/us/Electronics/metadata_us_Electronics.json.gz"]
        != b["xmarket/us/Electronics/metadata_us_Electronics.json.gz"]
    )


def test_without_broken_lines_every_line_is_valid(tmp_path: Path) -> None:
    clean = generate_sample(tmp_path / "clean", broken_lines=False, markets=("us",), **SMALL)
    assert clean.broken_lines == [] and clean.cross_market_asins == []
    assert all(f["gzip_ok"] for f in clean.files)
    got = _ingest(clean)
    assert got["rejected"] == [] and all(got["gzip_ok"].values())
    assert got["n_lines"] == clean.n_lines == clean.n_products == 150
    assert {f["market"] for f in clean.files} == {"us"}


def test_ensure_sample_is_idempotent_and_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sample"
    first = ensure_sample(out, **SMALL)
    assert first.out_dir == out and first.n_products == 150
    manifest = out / MANIFEST_NAME
    stamp = manifest.stat().st_mtime_ns

    again = ensure_sample(out, **SMALL)
    assert again == first and manifest.stat().st_mtime_ns == stamp

    # A crash mid-generation leaves the previous sample untouched and no temp dirs behind.
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(gen_module, "render_image", boom)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_sample(out, seed=7, **SMALL)
    monkeypatch.undo()
    assert ensure_sample(out, **SMALL) == first and manifest.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["sample"]

    # Leftovers of a killed run (a temp sibling) are cleared on the next generation.
    (tmp_path / ".sample.tmp-dead").mkdir()
    changed = ensure_sample(out, seed=7, **SMALL)
    assert changed.params["seed"] == 7 and changed.out_dir == out
    assert json.loads(manifest.read_text())["params"]["seed"] == 7
    assert changed.broken_lines != first.broken_lines
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["sample"]


def test_concurrent_ensure_sample_builds_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: ensure_sample(out, **SMALL), range(3)))
    assert results[0] == results[1] == results[2]
    assert _ingest(results[0])["n_lines"] == results[0].n_lines
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["shared"]


def test_refuses_to_clobber_foreign_directories(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_sample(foreign, **SMALL)
    with pytest.raises(FileExistsError):
        ensure_sample(foreign, **SMALL)
    assert (foreign / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n_products": 10}, ValueError),
        ({"n_products": 1.5}, TypeError),
        ({"markets": ()}, ValueError),
        ({"markets": ("usa",)}, ValueError),
        ({"markets": ("us", "US")}, ValueError),
        ({"image_size": 4}, ValueError),
        ({"broken_lines": "yes"}, TypeError),
        ({"colour": "red"}, TypeError),
    ],
)
def test_bad_params_are_rejected(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        normalise_params(**kwargs)


def test_png_images_are_real_png(sample: SampleSummary) -> None:
    pngs = sorted(sample.images_dir.glob("*.png"))
    assert pngs
    with Image.open(io.BytesIO(pngs[0].read_bytes())) as im:
        assert im.format == "PNG"
