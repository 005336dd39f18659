"""JSON values, typed: what a document read from a file, a socket or another process may hold.

``Json`` is recursive, so a value read with ``json.loads`` must be narrowed (``isinstance``, or
validated into a model) before use; nothing about it is ``Any``. Functions that only *read* a
document take ``JsonMapping``: a ``dict[str, int]`` is one, while it is not a ``JsonObject``
(``dict`` is invariant).

The readers below narrow a document field by field: each gives its value back as it is (an
integer read as a number stays an integer), or raises ``ValueError`` saying what it expected.
(pydantic cannot validate ``Json`` itself: it recurses without end.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias, TypeGuard, TypeVar

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"
JsonObject: TypeAlias = "dict[str, Json]"
#: A document only read: any mapping of JSON values (covariant in its values).
JsonMapping: TypeAlias = "Mapping[str, JsonLike]"
#: A value only read: JSON, or any mapping/sequence of such values.
JsonLike: TypeAlias = "Mapping[str, JsonLike] | Sequence[JsonLike] | str | int | float | bool | None"

T = TypeVar("T")


def object_of(value: Json) -> JsonObject:
    """``value`` as a JSON object, or ``ValueError`` when it is anything else."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def is_json(value: object) -> TypeGuard[Json]:
    """Whether ``value`` is JSON as ``json.loads`` gives it, all the way down: objects with text
    keys, lists, text, numbers, booleans and null."""
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return True
    if isinstance(value, list):
        return all(is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return False


def json_object(value: object) -> JsonObject:
    """``value`` (a document built in this process, say) as a JSON object, checked all the way down."""
    if not is_json(value):
        raise ValueError(f"not JSON: a {type(value).__name__} holding something else")
    return object_of(value)


def field(doc: JsonObject, key: str) -> Json:
    """``doc[key]``; ``ValueError`` when it has none."""
    try:
        return doc[key]
    except KeyError:
        raise ValueError(f"expected a field {key!r}") from None


def text(value: Json) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def integer(value: Json) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def number(value: Json) -> float:
    """An integer or a float, as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return value


def boolean(value: Json) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type(value).__name__}")
    return value


def optional(read: Callable[[Json], T], value: Json) -> T | None:
    """None for null, else ``read(value)``."""
    return None if value is None else read(value)


def list_of(read: Callable[[Json], T], value: Json) -> list[T]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return [read(v) for v in value]


def dict_of(read: Callable[[Json], T], value: Json) -> dict[str, T]:
    """A JSON object's values read with ``read``, in its order."""
    return {k: read(v) for k, v in object_of(value).items()}
