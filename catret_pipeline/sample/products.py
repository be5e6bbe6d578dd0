"""Product records in the XMarket schema: identifiers, titles, text, details, ratings, imgUrl.

:class:`ProductBuilder` owns the one seeded stream every draw of a sample comes from, so the
order of its calls is part of the output: reordering them changes every product after.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from dataclasses import dataclass
from typing import Any

from catret_pipeline.sample import vocabulary as V
from catret_pipeline.sample.images import COLOURS, SHAPES, LeafStyle, RootStyle
from catret_pipeline.sample.leaves import Leaf, paper_leaves, tree_leaves
from catret_pipeline.sample.manifest import DEFAULT_SHAPE

_NO_IMAGE_SHARE = 0.03
_PNG_SHARE = 0.12
_ODD_IMAGE_SHARE = 0.05

_ASIN_CHARS = string.ascii_uppercase + string.digits
_IMAGE_ID_CHARS = string.ascii_letters + string.digits
_IMAGE_BASE = "https://m.media-amazon.com/images/I/"
_SX_WIDTHS = (300, 342, 385, 425, 466, 522, 569, 679)
_SY_HEIGHTS = (355, 450, 500, 550, 679)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass
class Product:
    """One drawn product: its record, where it is listed, and the image it gets."""

    index: int
    asin: str
    leaf: Leaf
    path: tuple[str, ...]
    market: str
    record: dict[str, Any]
    image_name: str | None
    image_format: str
    style_leaf: Leaf


class ProductBuilder:
    """The sample's seeded stream and what it has drawn so far (asins, image ids, styles).

    The paper shape draws from its own tree and writes fewer attribute strings a product.
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.seed: int = params["seed"]
        self.markets: list[str] = params["markets"]
        self.rng = random.Random(f"catret-sample/{self.seed}")
        #: paper shape: its own tree, and fewer attribute strings (the paper's 5.87)
        self.paper = params.get("shape", DEFAULT_SHAPE) == "paper"
        self.leaves = paper_leaves(self.seed) if self.paper else tree_leaves()
        self.by_root: dict[str, list[Leaf]] = {}
        for leaf in self.leaves:
            self.by_root.setdefault(leaf.root, []).append(leaf)
        self.root_styles = {
            name: RootStyle(vocab.background, vocab.texture) for name, vocab in V.ROOTS.items()
        }
        combos = [(s, c) for s in SHAPES for c in COLOURS]
        self.rng.shuffle(combos)
        # 100 (shape, colour) pairs for 80 leaves: every leaf of the tree looks different
        # (paper leaves look like the vocabulary leaf they grew from).
        self.leaf_styles = {
            leaf.index: LeafStyle(*combos[leaf.style_key % len(combos)]) for leaf in self.leaves
        }
        self._asins: set[str] = set()
        self._image_ids: set[str] = set()
        self._n_products = 0
        #: products behind broken lines: imaged too, so every readable imgUrl has a mirror file
        self.broken_products: list[Product] = []

    # ---- identifiers

    def new_asin(self) -> str:
        while True:
            asin = "B0" + "".join(self.rng.choices(_ASIN_CHARS, k=8))
            if asin not in self._asins:
                self._asins.add(asin)
                return asin

    def new_image_id(self) -> str:
        while True:
            body = "".join(self.rng.choices(_IMAGE_ID_CHARS, k=9))
            if self.rng.random() < 0.3:
                cut = self.rng.randint(1, 8)
                body = body[:cut] + "-" + body[cut + 1 :]
            image_id = self.rng.choice(("41", "51", "61", "71", "81", "91")) + body
            if image_id not in self._image_ids:
                self._image_ids.add(image_id)
                return image_id

    # ---- record parts

    def _img_url(self) -> tuple[str, str | None, str]:
        """Return (imgUrl string, file name of its largest size or None, image format)."""
        rng = self.rng
        if rng.random() < _NO_IMAGE_SHARE:
            return "[]", None, "JPEG"
        image_format = "PNG" if rng.random() < _PNG_SHARE else "JPEG"
        ext = "png" if image_format == "PNG" else "jpg"
        image_id = self.new_image_id()
        aspect = rng.uniform(0.55, 1.35)  # height / width
        k = rng.choice((2, 3, 3))
        if rng.random() < 0.15:
            sizes = [(f"_AC_SY{h}_", [h, round(h / aspect)]) for h in rng.sample(_SY_HEIGHTS, k)]
        else:
            sizes = [(f"_AC_SX{w}_", [round(w * aspect), w]) for w in rng.sample(_SX_WIDTHS, k)]
        sizes.sort(key=lambda s: s[1][0] * s[1][1], reverse=rng.random() < 0.5)
        urls = {f"{_IMAGE_BASE}{image_id}.{token}.{ext}": hw for token, hw in sizes}
        largest = max(sizes, key=lambda s: s[1][0] * s[1][1])[0]
        return json.dumps(urls), f"{image_id}.{largest}.{ext}", image_format

    def _title(
        self, leaf: Leaf, vocab: V.RootVocabulary, brand: str, colour: str, material: str
    ) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.85:
            noun = rng.choice(leaf.nouns)
        elif r < 0.95:
            noun = rng.choice(rng.choice(self.by_root[leaf.root]).nouns)
        else:
            noun = rng.choice(V.GENERIC_NOUNS)
        adj = rng.choice(vocab.adjectives)
        generic = rng.choice(V.GENERIC_ADJECTIVES)
        use = rng.choice(vocab.uses)
        pattern = rng.randrange(5)
        if pattern == 0:
            return f"{brand} {adj} {noun}, {colour}"
        if pattern == 1:
            return f"{brand} {generic} {adj} {noun} for {use}"
        if pattern == 2:
            return f"{noun} by {brand} - {generic} {material} Design ({colour})"
        if pattern == 3:
            return f"{brand} {noun}, {adj}, {material}, Color: {colour}"
        return f"{brand} {generic} {noun} - {adj} {noun.split()[-1]} for {use}, {colour}"

    def _rating_dist(self, avg: float) -> dict[str, int]:
        weights = [math.exp(-((s - avg) ** 2) / 1.2) for s in range(5, 0, -1)]
        total = sum(weights)
        pct = [round(100 * w / total) for w in weights]
        pct[0] += 100 - sum(pct)
        return {str(s): p for s, p in zip(range(5, 0, -1), pct, strict=True)}

    def make_product(self, leaf: Leaf, path: tuple[str, ...], market: str) -> Product:
        rng = self.rng
        vocab = V.ROOTS[leaf.root]
        domain, currency = V.MARKET_DOMAINS.get(market, (f"amazon.{market}", "$"))
        brand = rng.choice(vocab.brands)
        colour = rng.choice(vocab.colours)
        material = rng.choice(vocab.materials)
        use = rng.choice(vocab.uses)
        noun_for_text = rng.choice(leaf.nouns)
        asin = self.new_asin()
        title = self._title(leaf, vocab, brand, colour, material)
        ctx = {
            "noun": noun_for_text.lower(),
            "material": material.lower(),
            "colour": colour.lower(),
            "brand": brand,
            "use": use,
            "use_lower": use.lower(),
            "use_upper": use.upper(),
            "number": rng.randint(2, 12),
        }
        lo_f, hi_f = (1, 3) if self.paper else (2, 5)
        features = [
            f.format(**ctx)
            for f in rng.sample(vocab.features, rng.randint(lo_f, min(hi_f, len(vocab.features))))
        ]
        if rng.random() < 0.05:
            features = []
        description = " ".join(
            d.format(**ctx) for d in rng.sample(vocab.descriptions, rng.randint(1, 2))
        )
        if rng.random() < 0.08:
            description = ""
        colour_key = "Colour" if market != "us" else "Color"
        details = {
            "Manufacturer": brand,
            "Item model number": f"{brand[:3].upper()}-{rng.randint(10, 999)}{rng.choice('ABCDEFHJKLMNPRSTX')}",
            colour_key: colour,
            "Material": material,
        }
        for key, values in rng.sample(
            vocab.extra_details, rng.randint(0, min(2, len(vocab.extra_details)))
        ):
            details[key] = rng.choice(values)
        details["Item Weight"] = f"{rng.randint(20, 4000)} g"
        year, month, day = rng.randint(2014, 2021), rng.randrange(12), rng.randint(1, 28)
        details["Date First Available"] = (
            f"{_MONTHS[month]} {day}, {year}"
            if market == "us"
            else f"{day} {_MONTHS[month][:3]}. {year}"
        )
        if self.paper:
            # 2-6 of the 7-9 details: with 1-3 features about 6 attribute strings a product.
            keep = set(rng.sample(range(len(details)), rng.randint(2, 6)))
            details = {k: v for i, (k, v) in enumerate(details.items()) if i in keep}
        elif rng.random() < 0.3:
            details.pop(rng.choice(["Material", colour_key, "Item model number"]))
        avg = round(rng.uniform(2.8, 5.0), 1)
        lo, hi = vocab.price_range
        price = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        img_url, image_name, image_format = self._img_url()
        overview = {"Brand": brand, colour_key: colour}
        if rng.random() < 0.6:
            overview["Material"] = material
        record = {
            "asin": asin,
            "title": title,
            "averageRating": avg,
            "ratingCount": int(math.exp(rng.uniform(0, 9))),
            "amazon_badge": rng.choice(V.BADGES),
            "ratingDist": self._rating_dist(avg),
            "ratingByFeature": {
                f: round(rng.uniform(3.4, 5.0), 1)
                for f in rng.sample(V.RATING_FEATURES, rng.randint(0, 3))
            },
            "price": "" if rng.random() < 0.05 else f"{currency}{price:.2f}",
            "imgUrl": img_url,
            "related": {},
            "productDetails": details,
            "sellerPage": f"https://www.{domain}/s?me=A{''.join(rng.choices(_ASIN_CHARS, k=12))}",
            "categories": list(path),
            "description": description,
            "overviewFeatures": overview,
            "features": features,
            "reviewFilters": rng.sample(V.REVIEW_FILTER_WORDS, rng.randint(0, 4)),
        }
        style_leaf = leaf
        if rng.random() < _ODD_IMAGE_SHARE:
            style_leaf = rng.choice(self.by_root[leaf.root])
        product = Product(
            self._n_products, asin, leaf, path, market, record, image_name, image_format, style_leaf
        )
        self._n_products += 1
        return product

    def market_copy(self, product: Product, market: str) -> dict[str, Any]:
        """The same product as another market lists it: localised title, price and seller."""
        record = json.loads(json.dumps(product.record))
        title = record["title"]
        for us, uk in V.UK_SPELLINGS.items():
            title = re.sub(rf"\b{us}\b", uk, title)
        if title == record["title"]:
            suffix = " (UK Plug)" if product.leaf.root == "Electronics" else " - UK Edition"
            title += suffix if market == "uk" else f" [{market.upper()}]"
        record["title"] = title
        domain, currency = V.MARKET_DOMAINS.get(market, (f"amazon.{market}", "$"))
        if record["price"]:
            amount = float(re.sub(r"[^0-9.]", "", record["price"])) * self.rng.uniform(0.75, 0.95)
            record["price"] = f"{currency}{amount:.2f}"
        record["sellerPage"] = re.sub(r"www\.[^/]+/", f"www.{domain}/", record["sellerPage"])
        for section in ("productDetails", "overviewFeatures"):
            if market != "us" and "Color" in record[section]:
                record[section] = {
                    ("Colour" if k == "Color" else k): v for k, v in record[section].items()
                }
        return record
