"""Raw XMarket ingestion: parse, validate, quarantine, de-duplicate, clean (see docs/data.md)."""
