"""The raw catalogue: an XMarket-layout directory tree of gzipped metadata files."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import dagster as dg

from catret_pipeline.ingest.parsing import DEFAULT_MAX_LINE_BYTES
from catret_pipeline.ingest.reader import SourceFile


class XMarketSource(dg.ConfigurableResource):
    """Which metadata files to ingest and how.

    Layout: ``{root}/{market}/{Category}/metadata_{market}_{Category}.json.gz``; other files
    (reviews, ratings) are ignored. ``markets`` / ``categories`` are case-sensitive glob
    patterns on the directory names. ``market_priority`` decides which copy of an asin listed
    in several markets is kept (earlier first; unlisted markets after, by name).
    """

    root: str
    markets: list[str] = ["*"]
    categories: list[str] = ["*"]
    market_priority: list[str] = ["us"]
    attribute_fields: list[str] = ["features", "productDetails"]
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _selected(self, name: str, patterns: list[str]) -> bool:
        return any(fnmatchcase(name, p) for p in patterns)

    def metadata_files(self) -> list[Path]:
        """Matching metadata files, sorted by their path relative to ``root``."""
        root = self.root_path
        if not root.is_dir():
            raise FileNotFoundError(
                f"XMarket root {root} does not exist or is not a directory "
                f"(set resource 'xmarket' root, or CATRET_RAW_ROOT)"
            )
        found: list[Path] = []
        seen_markets: set[str] = set()
        seen_categories: set[str] = set()
        for market_dir in root.iterdir():
            if not market_dir.is_dir():
                continue
            for cat_dir in market_dir.iterdir():
                if not cat_dir.is_dir():
                    continue
                f = cat_dir / f"metadata_{market_dir.name}_{cat_dir.name}.json.gz"
                if not f.is_file():
                    continue
                seen_markets.add(market_dir.name)
                seen_categories.add(cat_dir.name)
                if self._selected(market_dir.name, self.markets) and self._selected(
                    cat_dir.name, self.categories
                ):
                    found.append(f)
        if not found:
            raise FileNotFoundError(
                f"no metadata_{{market}}_{{Category}}.json.gz under {root} matches "
                f"markets={self.markets} categories={self.categories}; "
                f"markets present: {sorted(seen_markets) or 'none'}, "
                f"categories present: {sorted(seen_categories) or 'none'}"
            )
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())

    def source_files(self) -> list[SourceFile]:
        root = self.root_path
        return [
            SourceFile(
                path=p, source_file=p.relative_to(root).as_posix(), market=p.parent.parent.name
            )
            for p in self.metadata_files()
        ]
