"""Strict pydantic base: unknown keys are errors, every default lives on the model."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _bool_for_number(annotation, value) -> bool:
    """Whether `value` holds a boolean where `annotation` wants a number (int or float), at any depth
    of lists, tuples, dicts, optionals and constrained (Annotated) types."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _bool_for_number(args[0], value)
    if isinstance(value, bool):
        if annotation in (int, float):
            return True
        if origin in (typing.Union, types.UnionType):
            return bool not in args and any(_bool_for_number(a, value) for a in args if a is not type(None))
        return False
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple)) and args:
        return any(_bool_for_number(args[0], v) for v in value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_for_number(args[1], v) for v in value.values())
    if origin in (typing.Union, types.UnionType):
        return any(_bool_for_number(a, value) for a in args if a is not type(None))
    return False


class StrictModel(BaseModel):
    """A settings section: unknown keys fail, values are validated on assignment.

    A boolean is never a number here: pydantic's lax mode reads `epochs: true` as 1, which hides
    a mistyped value; YAML's `yes`/`no`/`true`/`false` are booleans, so they are refused wherever a
    field (or the items of a list field) wants a number.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_as_numbers(cls, value, info: ValidationInfo):
        if info.field_name and _bool_for_number(cls.model_fields[info.field_name].annotation, value):
            raise ValueError("expected a number, not a boolean (true/false/yes/no)")
        return value
