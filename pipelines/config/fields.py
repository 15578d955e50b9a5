"""What the config declares about each field, read from the models: the trigger form (Params)
and the CLI flags are generated from it, and config errors quote its allowed range."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BaseModel, TypeAdapter, ValidationError

from pipelines.config.sections import FORM_SECTIONS, PipelineConfig
from pipelines.errors import ConfigError


def error_line(name: str, error: Mapping[str, Any], allowed: str | None) -> str:
    """`name: what is wrong (got value); allowed: range`: the one shape of every config error."""
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    hint = f"; allowed: {allowed}" if allowed else ""
    return f"{name}: {error['msg']}{shown}{hint}"


def allowed_values(dotted_field: str) -> str | None:
    """Describe the allowed values of a config field, e.g. `'0.0 <= x <= 1.0'`.

    Args:
        dotted_field: field path such as `"checks.max_duplicate_rate"`.

    Returns:
        A human description, or None when the field is unknown or has no declared bounds or
        choices.
    """
    try:
        return field_spec(dotted_field).allowed()
    except KeyError:
        return None


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What the config declares about one field.

    Attributes:
        path: dotted path, e.g. `"train.epochs"`.
        value_type: the type of a set value (`int`, `float`, `bool`, `str`, `dt.date`,
            `dt.datetime`); a Literal's choices give theirs.
        optional: whether None (unset: the layer below decides) is allowed.
        choices: the Literal's values, or None.
        bounds: the declared bounds among `ge`, `gt`, `le`, `lt`.
        default: the code default.
        description: what the field means.
        title: a short label (the field's `title`, else its name in words).
        section: the trigger-form section the field appears in; None = not on the form.
        name: the field's Param and CLI flag name: its name inside its section (`"epochs"`)
            unless it declares one (`promotion.mode` is `promotion_mode`).
    """

    path: str
    value_type: type
    optional: bool
    choices: tuple[Any, ...] | None
    bounds: dict[str, float]
    default: Any
    description: str | None
    title: str
    section: str | None
    name: str

    def allowed(self) -> str | None:
        """The allowed values in words (`"1 <= x <= 1000"`, `"'adam' | 'sgd'"`), or None."""
        if self.choices is not None:
            return " | ".join(repr(c) for c in self.choices)
        b = self.bounds
        lower = f"{b['ge']} <= " if "ge" in b else f"{b['gt']} < " if "gt" in b else ""
        upper = f" <= {b['le']}" if "le" in b else f" < {b['lt']}" if "lt" in b else ""
        return f"{lower}x{upper}" if lower or upper else None

    def validate(self, value: Any) -> Any:
        """The value as the config would hold it.

        Raises:
            ConfigError: `path: what is wrong (got value); allowed: range`, the shape of a
                config error.
        """
        try:
            return _adapter(self.path).validate_python(value)
        except ValidationError as exc:
            raise ConfigError(error_line(self.path, exc.errors()[0], self.allowed())) from None


_BOUND_TYPES = {
    annotated_types.Ge: "ge",
    annotated_types.Gt: "gt",
    annotated_types.Le: "le",
    annotated_types.Lt: "lt",
}


def field_spec(path: str, model: type[BaseModel] | None = None) -> FieldSpec:
    """The declaration of one config field.

    Args:
        path: dotted path such as `"train.epochs"`.
        model: the model the path starts from (default `PipelineConfig`).

    Raises:
        KeyError: no such field.
    """
    info = _field_info(path, model or PipelineConfig)
    args = typing.get_args(info.annotation)
    optional = typing.get_origin(info.annotation) in (typing.Union, types.UnionType) and (
        type(None) in args
    )
    value = next(a for a in args if a is not type(None)) if optional else info.annotation
    choices = typing.get_args(value) if typing.get_origin(value) is Literal else None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    name = path.rpartition(".")[2]
    return FieldSpec(
        path=path,
        value_type=type(choices[0]) if choices else value,
        optional=optional,
        choices=choices,
        bounds={
            _BOUND_TYPES[type(meta)]: getattr(meta, _BOUND_TYPES[type(meta)])
            for meta in info.metadata
            if type(meta) in _BOUND_TYPES
        },
        default=info.default,
        description=info.description,
        title=info.title or name.replace("_", " ").capitalize(),
        section=extra.get("section"),
        name=extra.get("name", name),
    )


def form_fields() -> list[FieldSpec]:
    """The fields on the DAG's trigger form (those declared with a section), section by section
    in `FORM_SECTIONS` order (the form shows a section where its first field is), config order
    within a section."""
    fields = [
        spec
        for section, info in PipelineConfig.model_fields.items()
        for field in info.annotation.model_fields
        if (spec := field_spec(f"{section}.{field}")).section is not None
    ]
    return sorted(fields, key=lambda spec: FORM_SECTIONS.index(spec.section))


def _field_info(path: str, model: type[BaseModel]):
    *sections, name = path.split(".")
    for part in sections:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(path)
        model = annotation
    return model.model_fields[name]


@functools.cache
def _adapter(path: str) -> TypeAdapter:
    info = _field_info(path, PipelineConfig)
    if not info.metadata:
        return TypeAdapter(info.annotation)
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)])
