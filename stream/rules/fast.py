"""Building rule-state models without validating them again (the hot path of issue 13).

The rule state is a tree of frozen pydantic models (JSON round-trippable: the Faust
table's values). Each rule step builds new nodes from parts that are already valid (the
previous state, the parsed message, parameters), so pydantic's validation in
``Model(...)`` and the copying in ``model_copy`` are pure overhead there. These two do
what ``model_construct`` and ``model_copy(update=...)`` do, for models without private
attributes or extras, at a fraction of the cost. The caller gives each field its final
type (a ``float`` where the field is a float: nothing is coerced).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__
_DEFAULTS: dict[type[Any], tuple[dict[str, Any], frozenset[str]]] = {}


def _defaults(cls: type[BaseModel]) -> tuple[dict[str, Any], frozenset[str]]:
    d = _DEFAULTS.get(cls)
    if d is None:
        proto = cls()  # every field of these models has a default
        d = _DEFAULTS[cls] = (dict(proto.__dict__), frozenset(cls.model_fields))
    return d


def make(cls: type[M], **values: Any) -> M:
    """``cls(**values)`` for a model whose fields all have immutable defaults (or that
    are never mutated): fields not given take their defaults."""
    base, _ = _defaults(cls)
    d = dict(base)
    d.update(values)
    obj = cls.__new__(cls)
    _set(obj, "__dict__", d)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def build(cls: type[M], values: dict[str, Any]) -> M:
    """``cls(**values)`` with every field given (``values`` is used, not copied)."""
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def replace(obj: M, **update: Any) -> M:
    """``obj.model_copy(update=update)`` (shallow, like it)."""
    cls = type(obj)
    new = cls.__new__(cls)
    d = dict(obj.__dict__)
    d.update(update)
    _set(new, "__dict__", d)
    _set(new, "__pydantic_fields_set__", obj.__pydantic_fields_set__ | update.keys())
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new
