"""Cleaning: text normalisation, attributes, image choice, content hashes."""

import hashlib

import pytest

from catret_pipeline.ingest.cleaning import (
    clean_record,
    description_text,
    extract_attributes,
    image_candidates,
    largest_image,
    normalise_text,
)
from catret_pipeline.ingest.validation import validate_record


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  Radio\t\tAntenna \n", "Radio Antenna"),
        ("Tom &amp; Jerry&nbsp;DVD", "Tom & Jerry DVD"),
        ("Caf\u0065\u0301", "Caf\u00e9"),  # NFC
        ("Size \u200e:\u200f 10", "Size : 10"),  # invisible bidi marks
        ("a\x00b", "a b"),
        ("&amp;amp;", "&amp;"),  # entities decoded once only
    ],
)
def test_normalise_text(raw, clean):
    assert normalise_text(raw) == clean


def test_title_normalisation_in_clean_record():
    row = clean_record(
        {
            "title": " Big&nbsp;&quot;Red&quot;\n Box ",
            "categories": [" Home &amp; Kitchen ", "Boxes"],
        },
        ["features"],
    )
    assert row["title"] == 'Big "Red" Box'
    assert row["category_path"] == ["Home & Kitchen", "Boxes"]
    assert row["title_hash"] == hashlib.sha1(b'Big "Red" Box').hexdigest()


def test_attributes_features_then_details_dedup_and_order():
    rec = {
        "features": ["  Waterproof ", "", "Colour: Blue", "Waterproof"],
        "productDetails": {
            "Colour": "Blue",
            "Manufacturer \u200f : \u200e": "\u200e Sangean",
            "Empty": "  ",
            "Weight": 1.5,
        },
    }
    assert extract_attributes(rec, ["features", "productDetails"]) == [
        "Waterproof",
        "Colour: Blue",
        "Manufacturer: Sangean",
        "Weight: 1.5",
    ]
    assert extract_attributes(rec, ["productDetails"])[0] == "Colour: Blue"
    assert extract_attributes(rec, ["features"], max_attributes=1) == ["Waterproof"]
    assert extract_attributes({}, ["features", "productDetails"]) == []


def test_image_xmarket_json_string_form():
    img = '{"https://x/small.jpg": [100, 80], "https://x/big.jpg": [569, 369], "https://x/mid.jpg": [300, 300]}'
    assert largest_image(img) == "https://x/big.jpg"


def test_image_parsed_dict_form_and_ties():
    assert (
        largest_image({"https://x/b.jpg": [10, 20], "https://x/a.jpg": [20, 10]})
        == "https://x/a.jpg"
    )
    assert (
        largest_image({"https://x/a.jpg": [1, 1], "https://x/z.jpg": [2, 2]}) == "https://x/z.jpg"
    )


@pytest.mark.parametrize("empty", ["[]", "", "  ", [], {}, None, "{}"])
def test_image_empty_forms_are_null(empty):
    assert largest_image(empty) is None


def test_image_other_forms():
    assert largest_image("https://x/only.jpg") == "https://x/only.jpg"
    assert largest_image(["https://x/1.jpg", {"https://x/2.jpg": [5, 5]}]) == "https://x/2.jpg"
    assert largest_image("{'https://x/p.jpg': [5, 5]}") == "https://x/p.jpg"
    assert image_candidates({"https://x/n.jpg": None}) == [("https://x/n.jpg", 0.0, 0.0)]
    for bad in ["ftp-ish", '"just a string"', {"https://x": [1]}, [3]]:
        with pytest.raises(ValueError):
            image_candidates(bad)


def test_description_forms():
    assert description_text(None) == ""
    assert description_text(" a&amp;b ") == "a&b"
    assert description_text(["First.", " ", "Second."]) == "First. Second."


def test_hashes_stable_and_content_sensitive():
    base = {
        "title": "T",
        "categories": ["A"],
        "features": ["x", "y"],
        "imgUrl": '{"https://x/a.jpg": [1, 1]}',
    }
    a = clean_record(base, ["features"])
    assert a == clean_record(dict(base), ["features"])
    assert (
        a["attributes_hash"]
        != clean_record({**base, "features": ["x y"]}, ["features"])["attributes_hash"]
    )
    assert a["image_hash"] == hashlib.sha1(b"https://x/a.jpg").hexdigest()
    assert clean_record({**base, "imgUrl": "[]"}, ["features"])["image_hash"] is None
    assert len(a["title_hash"]) == 40


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "javascript:alert(1)", "ftp://h/a.jpg", "/etc/passwd"]
)
def test_image_string_form_with_any_scheme_is_one_url_like_the_dict_form(url):
    # Regression: the plain string form quarantined the whole product (wrong_type:imgUrl)
    # while {"file:///etc/passwd": [h, w]} kept it; now both keep it and the image fetcher
    # refuses the URL (a `refused` product_images row).
    assert largest_image(url) == largest_image({url: [1, 1]}) == url
    record = {"asin": "A1", "title": "t", "categories": ["A"]}
    assert validate_record({**record, "imgUrl": url}).ok
    assert validate_record({**record, "imgUrl": {url: [1, 1]}}).ok
