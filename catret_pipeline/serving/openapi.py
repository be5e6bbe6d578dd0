"""The OpenAPI 3.1 document of the API, written out by hand: five GET endpoints do not need a
schema generator, and Swagger UI's assets would come from a CDN, which an offline server lacks;
any OpenAPI viewer can load ``/openapi.json``."""

from __future__ import annotations

from catret_pipeline.serving.query import DEFAULT_K, MAX_K, MAX_QUERY_CHARS

_ERROR = {
    "description": "bad input",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_SETTING = {
    "name": "setting",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["all", "general", "specific"], "default": "all"},
}


def _k(default: int) -> dict:
    return {
        "name": "k",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": default},
    }


def _json(ref: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def openapi_document() -> dict:
    hit = {
        "type": "object",
        "properties": {
            "rank": {"type": "integer"},
            "asin": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "score": {"type": "number", "description": "cosine similarity"},
            "category_path": {"type": "array", "items": {"type": "string"}},
            "image_url": {"type": ["string", "null"]},
        },
    }
    results = {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "setting": {"type": "string"},
            "model": {"type": "string"},
            "query_source": {
                "type": "string",
                "enum": ["precomputed", "encoded", "category_rankings"],
            },
            "seen_in_train": {"type": "boolean"},
            "snapshot": {"type": "string"},
            "notes": {"type": "array", "items": {"type": "string"}},
            "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "catret serve", "version": "1"},
        "paths": {
            "/health": {
                "get": {
                    "summary": "Status, snapshot and serving model per setting",
                    "responses": {"200": {"description": "ok"}},
                }
            },
            "/api/search": {
                "get": {
                    "summary": "Top-k products of the whole catalogue for a category name",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_QUERY_CHARS,
                            },
                        },
                        _k(DEFAULT_K),
                        _SETTING,
                    ],
                    "responses": {
                        "200": _json("Results", "ranked hits"),
                        "400": _ERROR,
                        "422": {**_ERROR, "description": "a new name and no matching encoder"},
                    },
                }
            },
            "/api/categories": {
                "get": {
                    "summary": "The category tree",
                    "parameters": [_SETTING],
                    "responses": {"200": {"description": "nodes"}, "400": _ERROR},
                }
            },
            "/api/categories/{node_id}": {
                "get": {
                    "summary": "A category page: the node, its children and its top-k products",
                    "parameters": [
                        {
                            "name": "node_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        _k(50),
                        _SETTING,
                    ],
                    "responses": {
                        "200": _json("Results", "the page"),
                        "400": _ERROR,
                        "404": {**_ERROR, "description": "unknown node"},
                    },
                }
            },
            "/images/{path}": {
                "get": {
                    "summary": "A product image from the content-addressed cache",
                    "parameters": [
                        {
                            "name": "path",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": {"description": "image bytes (immutable)"}, "404": _ERROR},
                }
            },
        },
        "components": {
            "schemas": {
                "Hit": hit,
                "Results": results,
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
            }
        },
    }
