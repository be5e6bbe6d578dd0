"""Reading gzip files and whole catalogues: broken files, quarantine, duplicates, reconciliation."""

import gzip
import json
from pathlib import Path

import pytest

from catret_pipeline.ingest.reader import iter_metadata_lines, read_catalogue
from catret_pipeline.ingest.resources import XMarketSource


def rec(asin, title="Thing", cats=("Root", "Leaf"), **extra):
    return {"asin": asin, "title": title, "categories": list(cats), **extra}


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def write_gz(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


def xmarket_file(root: Path, market: str, cat: str) -> Path:
    return root / market / cat / f"metadata_{market}_{cat}.json.gz"


def test_lines_numbers_blank_lines_and_crlf(tmp_path):
    f = write_gz(
        tmp_path / "a.json.gz",
        [line(rec("A")), b"\n", b"   \r\n", line(rec("B"))[:-1] + b"\r\n", line(rec("C"))[:-1]],
    )
    items = list(iter_metadata_lines(f))
    assert [i.line_no for i in items] == [1, 4, 5]
    assert all(i.reason is None for i in items)
    assert not items[1].data.endswith(b"\r")
    assert json.loads(items[2].data)["asin"] == "C"  # last line without newline is kept


def test_multi_member_gzip_and_zero_padding(tmp_path):
    f = tmp_path / "m.json.gz"
    f.write_bytes(gzip.compress(line(rec("A"))) + gzip.compress(line(rec("B"))) + b"\x00" * 10)
    assert [json.loads(i.data)["asin"] for i in iter_metadata_lines(f)] == ["A", "B"]


def test_corrupt_gzip_trailing_garbage_keeps_lines_read(tmp_path):
    f = tmp_path / "c.json.gz"
    f.write_bytes(gzip.compress(b"".join(line(rec(f"A{i}")) for i in range(10))) + b"garbage!")
    items = list(iter_metadata_lines(f))
    assert [i.reason for i in items[:10]] == [None] * 10
    assert len(items) == 11
    last = items[-1]
    assert last.reason == "corrupt_gzip" and "after line 10" in last.detail and last.line_no == 11


def test_corrupt_gzip_truncated_tail(tmp_path):
    body = b"".join(line(rec(f"A{i:04d}", title=f"Product number {i}")) for i in range(300))
    data = gzip.compress(body)
    f = tmp_path / "t.json.gz"
    f.write_bytes(data[: len(data) * 2 // 3])
    items = list(iter_metadata_lines(f))
    good = [i for i in items if i.reason is None]
    assert items[-1].reason == "corrupt_gzip"
    assert [i.reason for i in items].count("corrupt_gzip") == 1
    assert 100 < len(good) < 300
    assert all(json.loads(i.data)["asin"] == f"A{n:04d}" for n, i in enumerate(good))
    assert f"after line {len(good)}" in items[-1].detail


def test_not_gzip_and_empty_file(tmp_path):
    plain = tmp_path / "p.json.gz"
    plain.write_bytes(line(rec("A")) * 3)
    items = list(iter_metadata_lines(plain))
    assert len(items) == 1 and items[0].reason == "not_gzip" and items[0].line_no == 0
    assert '"asin"' in items[0].raw_text
    empty = tmp_path / "e.json.gz"
    empty.write_bytes(b"")
    (item,) = iter_metadata_lines(empty)
    assert item.reason == "not_gzip" and "empty" in item.detail


def test_long_line_is_cut_but_length_known(tmp_path):
    big = line(rec("A", description="x" * 5000))
    f = write_gz(tmp_path / "l.json.gz", [line(rec("B")), big, line(rec("C"))])
    items = list(iter_metadata_lines(f, max_line_bytes=1000))
    assert len(items) == 3
    assert len(items[1].data) == 1001 and items[1].n_bytes == len(big) - 1


def _catalogue(tmp_path: Path) -> Path:
    """Every broken-line kind, plus duplicates across markets, in XMarket layout."""
    root = tmp_path / "xmarket"
    us_lines = [
        line(rec("G1", imgUrl='{"https://x/1.jpg": [10, 10]}')),  # 1 good
        b'{"asin": "T1", "title": "Trunc\n',  # 2 truncated JSON
        str(rec("P1", features=["a"])).encode() + b"\n",  # 3 python literal: accepted
        line({"asin": "M1", "categories": ["A"]}),  # 4 missing title
        line({"asin": "M2", "title": "x"}),  # 5 missing categories
        line(rec("W1", features="not a list")),  # 6 wrong type
        b'{"asin": "U1", "title": "caf\xe9", "categories": ["A"]}\n',  # 7 non-UTF-8
        b"\n",  # 8 blank: skipped, not counted
        line(rec("D1", title="us copy")),  # 9 duplicate (kept: us)
        line(rec("L1", description="y" * 3000)),  # 10 too long
        line({"title": "no asin", "categories": ["A"]}),  # 11 missing asin
        line(rec("D2", title="first")),  # 12
        line(rec("D2", title="second")),  # 13 duplicate within one file
    ]
    write_gz(xmarket_file(root, "us", "Electronics"), us_lines)
    write_gz(
        xmarket_file(root, "de", "Electronics"), [line(rec("D1", title="de copy")), line(rec("G2"))]
    )
    broken = xmarket_file(root, "ca", "Books")
    broken.parent.mkdir(parents=True)
    broken.write_bytes(gzip.compress(line(rec("G3")) + line(rec("G4"))) + b"junk")
    plain = xmarket_file(root, "ca", "Toys")
    plain.parent.mkdir(parents=True)
    plain.write_bytes(line(rec("G5")))
    # Not metadata: must be ignored.
    (root / "us" / "Electronics" / "reviews_us_Electronics.json.gz").write_bytes(b"x")
    return root


def test_read_catalogue_every_reason_and_invariant(tmp_path):
    source = XMarketSource(root=str(_catalogue(tmp_path)), max_line_bytes=2000)
    result = read_catalogue(source.source_files(), source.market_priority, source.max_line_bytes)
    raw, q = result.raw_products, result.quarantine
    assert sorted(raw.get_column("asin")) == ["D1", "D2", "G1", "G2", "G3", "G4", "P1"]
    reasons = {
        (r["source_file"].split("/")[1], r["line_no"]): r["reason"] for r in q.iter_rows(named=True)
    }
    assert reasons == {
        ("Books", 3): "corrupt_gzip",
        ("Toys", 0): "not_gzip",
        ("Electronics", 1): "duplicate_asin",  # de copy of D1 loses to us
        ("Electronics", 2): "invalid_json",
        ("Electronics", 4): "missing_title",
        ("Electronics", 5): "missing_categories",
        ("Electronics", 6): "wrong_type:features",
        ("Electronics", 7): "invalid_utf8",
        ("Electronics", 10): "line_too_long",
        ("Electronics", 11): "missing_asin",
        ("Electronics", 13): "duplicate_asin",
    }
    # 12 non-blank us lines + 2 de + (2 lines + 1 break) ca/Books + 1 ca/Toys
    assert result.lines_read == 18 == raw.height + q.height
    dup = q.filter(q["asin"] == "D1").row(0, named=True)
    assert dup["source_file"] == "de/Electronics/metadata_de_Electronics.json.gz"
    assert dup["detail"] == "kept us/Electronics/metadata_us_Electronics.json.gz:9 (market us)"
    kept_d1 = raw.filter(raw["asin"] == "D1").row(0, named=True)
    assert json.loads(kept_d1["record"])["title"] == "us copy" and kept_d1["market"] == "us"
    d2 = raw.filter(raw["asin"] == "D2").row(0, named=True)
    assert d2["line_no"] == 12
    assert q.filter(q["reason"] == "invalid_json")["asin"].to_list() == ["T1"]
    assert json.loads(raw.filter(raw["asin"] == "P1")["record"][0])["features"] == ["a"]
    assert result.via["python_literal"] == 1
    assert q["raw_text"].str.len_chars().max() <= 500
    per_file = {f["source_file"]: f for f in result.per_file}
    assert per_file["us/Electronics/metadata_us_Electronics.json.gz"] == {
        "source_file": "us/Electronics/metadata_us_Electronics.json.gz",
        "lines": 12,
        "quarantined": 8,
        "kept": 4,
    }


def test_invariant_is_enforced(tmp_path):
    source = XMarketSource(root=str(_catalogue(tmp_path)), max_line_bytes=2000)
    result = read_catalogue(source.source_files())
    result.lines_read += 1
    with pytest.raises(RuntimeError, match="reconciliation"):
        result.check_invariant()


def test_source_selection_and_errors(tmp_path):
    root = _catalogue(tmp_path)
    src = XMarketSource(root=str(root))
    assert [p.relative_to(root).as_posix() for p in src.metadata_files()] == [
        "ca/Books/metadata_ca_Books.json.gz",
        "ca/Toys/metadata_ca_Toys.json.gz",
        "de/Electronics/metadata_de_Electronics.json.gz",
        "us/Electronics/metadata_us_Electronics.json.gz",
    ]
    only = XMarketSource(root=str(root), markets=["us", "d?"], categories=["Elec*"])
    assert [s.market for s in only.source_files()] == ["de", "us"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        XMarketSource(root=str(tmp_path / "nope")).metadata_files()
    with pytest.raises(FileNotFoundError, match="markets present: \\['ca', 'de', 'us'\\]"):
        XMarketSource(root=str(root), markets=["jp"]).metadata_files()


def test_source_file_order_does_not_depend_on_listing(tmp_path):
    root = _catalogue(tmp_path)
    files = XMarketSource(root=str(root)).source_files()
    a = read_catalogue(files)
    b = read_catalogue(list(reversed(files)))
    assert a.raw_products.sort("asin").equals(b.raw_products.sort("asin"))
    assert a.quarantine.equals(b.quarantine)
