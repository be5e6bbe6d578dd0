"""Parameters declared once, on the plain dataclass the code uses, and offered to Dagster from it.

The pure layers take frozen dataclasses (``ClipSpec``, ``TextSpec``, ``FetchOptions``, ...) that
import neither Dagster nor pydantic; the Dagster resources and configs that users edit in the
launchpad need pydantic fields with the same names, types, defaults and descriptions. Instead
of writing each parameter twice, a dataclass field carries its description (:func:`described`)
and :func:`fields_model` makes the pydantic model a resource inherits from;
:func:`dataclass_values` reads the values back to build the dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

DESCRIPTION = "description"


def described(description: str, *, default: Any = dataclasses.MISSING, **metadata: Any):
    """A dataclass field with the description its Dagster field shows (plus any ``metadata``)."""
    return dataclasses.field(default=default, metadata={DESCRIPTION: description, **metadata})


def declared_fields(dc: type, exclude: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of ``dc`` that carry a description, less ``exclude``."""
    skip = set(exclude)
    return [f for f in dataclasses.fields(dc) if DESCRIPTION in f.metadata and f.name not in skip]


def fields_model(name: str, dc: type, fields: Iterable[dataclasses.Field], module: str):
    """A pydantic model with ``fields`` of the dataclass ``dc`` (same names, types, defaults
    and descriptions), for a Dagster resource or config to inherit."""
    from pydantic import Field, create_model

    types = typing.get_type_hints(dc)
    declared = {
        f.name: (
            types[f.name],
            Field(
                default=... if f.default is dataclasses.MISSING else f.default,
                description=f.metadata[DESCRIPTION],
            ),
        )
        for f in fields
    }
    return create_model(name, __module__=module, **declared)


def dataclass_values(source: object, fields: Iterable[dataclasses.Field]) -> dict[str, Any]:
    """``{name: source.<name>}`` for ``fields``: a resource's values for its dataclass."""
    return {f.name: getattr(source, f.name) for f in fields}
