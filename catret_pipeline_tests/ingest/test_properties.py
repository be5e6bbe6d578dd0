"""Property-based tests of the raw-line parser and the file reader (hypothesis)."""

from __future__ import annotations

import gzip
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catret_pipeline.ingest.parsing import parse_line, raw_preview
from catret_pipeline.ingest.reader import SourceFile, read_catalogue
from catret_pipeline.ingest.validation import validate_record

PARSE_REASONS = {"invalid_json", "invalid_utf8", "line_too_long"}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _check(result) -> None:
    if result.ok:
        assert isinstance(result.record, dict)
        assert result.via in ("json", "python_literal")
        # json_text is strict JSON (no NaN) and says exactly what the record holds
        assert json.loads(result.json_text) == result.record
        json.dumps(result.record, allow_nan=False)
    else:
        assert result.reason in PARSE_REASONS
        assert result.record is None and result.detail


@FAST
@given(st.binary(max_size=300))
def test_parse_line_never_raises_on_bytes(raw):
    _check(parse_line(raw))
    assert isinstance(raw_preview(raw), str) and len(raw_preview(raw)) <= 500


@FAST
@given(st.text(max_size=200))
def test_parse_line_never_raises_on_text(text):
    _check(parse_line(text.encode("utf-8")))


@FAST
@given(json_values)
def test_json_lines_parse_iff_top_level_object(value):
    raw = json.dumps(value).encode()
    result = parse_line(raw)
    _check(result)
    assert result.ok == isinstance(value, dict)
    if result.ok:
        assert result.via == "json"


@FAST
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_python_literal_lines_read_like_their_json(value):
    """``str(dict)`` (how the XMarket page writes lines) reads as the same record as JSON does."""
    result = parse_line(str(value).encode())
    _check(result)
    if result.ok:
        as_json = parse_line(json.dumps(value).encode())
        assert result.record == as_json.record
    else:
        # Only non-finite floats are written by str() in a form literal_eval cannot read.
        assert "nan" in str(value) or "inf" in str(value)


@FAST
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=300))
def test_too_long_is_decided_on_size_alone(raw, limit):
    result = parse_line(raw, max_line_bytes=limit)
    assert (result.reason == "line_too_long") == (len(raw) > limit)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            ["asin", "title", "categories", "features", "productDetails", "imgUrl", "description"]
        ),
        json_values,
        max_size=7,
    )
)
def test_validation_never_raises_and_gives_a_reason_code(record):
    v = validate_record(record)
    if not v.ok:
        assert v.reason.startswith(("missing_", "wrong_type:")) and v.detail


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.binary(max_size=120) | json_values.map(lambda v: json.dumps(v).encode()), max_size=8
    ),
    st.sampled_from(["gzip", "plain", "cut", "garbage_tail"]),
)
def test_any_file_reconciles(tmp_path_factory, lines, form):
    """Whatever a file holds, lines read == raw products + quarantine rows, and nothing raises."""
    body = b"\n".join(lines)
    data = {
        "gzip": gzip.compress(body, mtime=0),
        "plain": body,
        "cut": gzip.compress(body, mtime=0)[: max(2, len(body) // 2)],
        "garbage_tail": gzip.compress(body, mtime=0) + b"\x01junk",
    }[form]
    path = tmp_path_factory.mktemp("f") / "metadata_us_X.json.gz"
    path.write_bytes(data)
    result = read_catalogue([SourceFile(path, "us/X/metadata_us_X.json.gz", "us")])
    assert result.lines_read == result.raw_products.height + result.quarantine.height
    assert result.quarantine["reason"].null_count() == 0
    assert not result.raw_products["asin"].is_duplicated().any()
    for text in result.raw_products["record"]:
        rec = json.loads(text)
        assert all(not (isinstance(v, float) and not math.isfinite(v)) for v in rec.values())
