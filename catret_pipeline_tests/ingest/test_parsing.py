"""Line parsing and record validation: every kind of broken line gets its reason code."""

import json

import pytest

from catret_pipeline.ingest.parsing import asin_hint, parse_line
from catret_pipeline.ingest.validation import Candidate, resolve_duplicates, validate_record

GOOD = {
    "asin": "B001",
    "title": "Radio Antenna",
    "categories": ["Electronics", "Antennas"],
    "features": ["Indoor"],
    "productDetails": {"Manufacturer": "Sangean"},
    "imgUrl": '{"https://x/a.jpg": [100, 100]}',
    "description": "An antenna.",
}


def test_json_line_parses_and_reserialises():
    r = parse_line(json.dumps(GOOD).encode())
    assert r.ok and r.via == "json"
    assert r.record == GOOD
    assert json.loads(r.json_text) == GOOD


def test_python_literal_dict_is_accepted():
    # The XMarket page writes str(dict): single quotes, True/None.
    raw = str({**GOOD, "flag": True, "price": None, "sizes": (1, 2)}).encode()
    r = parse_line(raw)
    assert r.ok and r.via == "python_literal"
    assert r.record["flag"] is True and r.record["price"] is None
    assert r.record["sizes"] == [1, 2]  # tuple round-tripped to what JSON readers see
    assert json.loads(r.json_text)["asin"] == "B001"


def test_python_code_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    raw = f"{{'asin': __import__('pathlib').Path({str(marker)!r}).touch()}}".encode()
    r = parse_line(raw)
    assert r.reason == "invalid_json"
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"asin": "B001", "title": "Trunc',  # truncated JSON
        b"{'asin': 'B001', 'title': }",
        b"not json at all",
        b"{'a': {1, 2}}",  # a set: literal_eval reads it, JSON cannot hold it
        b"[" * 5000 + b"]" * 5000,  # nesting too deep for both parsers
    ],
)
def test_invalid_json(raw):
    r = parse_line(raw)
    assert not r.ok and r.reason == "invalid_json"
    assert r.detail


@pytest.mark.parametrize("raw", [b'["a", "b"]', b"42", b'"str"', b"null"])
def test_non_object_top_level_is_invalid_json(raw):
    assert parse_line(raw).reason == "invalid_json"


def test_invalid_utf8_is_not_replaced():
    raw = b'{"asin": "B001", "title": "caf' + b"\xe9" + b'"}'
    r = parse_line(raw)
    assert r.reason == "invalid_utf8"
    assert "byte" in r.detail


def test_line_too_long():
    raw = json.dumps({**GOOD, "description": "x" * 200}).encode()
    assert parse_line(raw, max_line_bytes=len(raw)).ok
    r = parse_line(raw, max_line_bytes=len(raw) - 1)
    assert r.reason == "line_too_long"
    # The reader passes the true length of a line it had to cut.
    r = parse_line(raw[:10], max_line_bytes=50, total_bytes=10_000)
    assert r.reason == "line_too_long" and "10000" in r.detail


def test_nan_becomes_null_in_json_text():
    r = parse_line(b'{"asin": "B1", "price": NaN}')
    assert r.ok and json.loads(r.json_text)["price"] is None


def test_bom_is_tolerated():
    assert parse_line("\ufeff".encode() + json.dumps(GOOD).encode()).ok


def test_asin_hint_from_broken_line():
    assert asin_hint('{"asin": "B00X", "title": "tru') == "B00X"
    assert asin_hint("{'asin': 'B00Y', 'ti") == "B00Y"
    assert asin_hint("garbage") is None


def _reason(record):
    return validate_record(record).reason


def test_valid_record():
    v = validate_record({**GOOD, "asin": "  B001 "})
    assert v.ok and v.asin == "B001"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"asin": None}, "missing_asin"),
        ({"asin": "   "}, "missing_asin"),
        ({"asin": 123}, "wrong_type:asin"),
        ({"title": None}, "missing_title"),
        ({"title": " &nbsp; \t"}, "missing_title"),
        ({"title": ["a"]}, "wrong_type:title"),
        ({"categories": None}, "missing_categories"),
        ({"categories": []}, "missing_categories"),
        ({"categories": ["A", " "]}, "missing_categories"),
        ({"categories": "A > B"}, "wrong_type:categories"),
        ({"categories": ["A", 3]}, "wrong_type:categories"),
        ({"features": "Indoor"}, "wrong_type:features"),
        ({"features": ["ok", None]}, "wrong_type:features"),
        ({"productDetails": ["a"]}, "wrong_type:productDetails"),
        ({"productDetails": {"k": {"nested": 1}}}, "wrong_type:productDetails"),
        ({"imgUrl": 5}, "wrong_type:imgUrl"),
        ({"imgUrl": "{broken"}, "wrong_type:imgUrl"),
        ({"imgUrl": '{"https://x/a.jpg": "big"}'}, "wrong_type:imgUrl"),
        ({"description": 5}, "wrong_type:description"),
        ({"description": ["a", 1]}, "wrong_type:description"),
    ],
)
def test_validation_reasons(change, reason):
    v = validate_record({**GOOD, **change})
    assert v.reason == reason
    assert v.detail


def test_missing_fields_absent_not_null():
    rec = dict(GOOD)
    del rec["title"]
    assert _reason(rec) == "missing_title"
    rec = dict(GOOD)
    del rec["categories"]
    assert _reason(rec) == "missing_categories"
    assert _reason({"title": "t", "categories": ["A"]}) == "missing_asin"


def test_optional_fields_null_or_absent_are_fine():
    rec = {"asin": "B1", "title": "t", "categories": ["A"], "features": None, "imgUrl": None}
    assert validate_record(rec).ok
    assert validate_record({**GOOD, "imgUrl": "[]", "description": ["a", "b"]}).ok
    assert validate_record({**GOOD, "productDetails": {"Weight": 1.5, "x": None}}).ok


def test_first_failure_wins():
    assert _reason({"asin": "B1", "title": None, "categories": None}) == "missing_title"


def test_duplicate_resolution_rule():
    cands = [
        Candidate("A", "de", "de/X/m.json.gz", 1),
        Candidate("A", "us", "us/Y/m.json.gz", 9),
        Candidate("A", "us", "us/X/m.json.gz", 5),
        Candidate("A", "ca", "ca/X/m.json.gz", 1),
        Candidate("B", "de", "de/X/m.json.gz", 2),
        Candidate("B", "ca", "ca/X/m.json.gz", 2),
        Candidate("C", "us", "us/X/m.json.gz", 3),
        Candidate("C", "us", "us/X/m.json.gz", 7),
    ]
    kept, pairs = resolve_duplicates(cands, ["us"])
    # A: us beats others; within us, us/X before us/Y. B: no priority market, "ca" < "de".
    # C: same file, earlier line.
    assert [cands[i] for i in kept] == [cands[2], cands[5], cands[6]]
    assert pairs == [(0, 2), (1, 2), (3, 2), (4, 5), (7, 6)]
    # Priority order is honoured beyond the first entry, and input order does not matter.
    kept2, _ = resolve_duplicates(list(reversed(cands)), ["de", "us"])
    winners = {c.asin: c for c in (list(reversed(cands))[i] for i in kept2)}
    assert winners["A"] == cands[0] and winners["B"] == cands[4] and winners["C"] == cands[6]
