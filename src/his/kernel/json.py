"""JSON values, typed: what a document read from a file, a socket or another process may hold.

``Json`` is recursive, so a value read with ``json.loads`` must be narrowed (``isinstance``, or
validated into a model) before use; nothing about it is ``Any``. Functions that only *read* a
document take ``JsonMapping``: a ``dict[str, int]`` is one, while it is not a ``JsonObject``
(``dict`` is invariant).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"
JsonObject: TypeAlias = "dict[str, Json]"
#: A document only read: any mapping of JSON values (covariant in its values).
JsonMapping: TypeAlias = "Mapping[str, JsonLike]"
#: A value only read: JSON, or any mapping/sequence of such values.
JsonLike: TypeAlias = "Mapping[str, JsonLike] | Sequence[JsonLike] | str | int | float | bool | None"


def object_of(value: Json) -> JsonObject:
    """``value`` as a JSON object, or ``ValueError`` when it is anything else."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value
