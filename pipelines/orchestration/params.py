"""The DAG's trigger form, generated from the config, and the run's config built from it.

Every Param is a config field declared with a form section (`pipelines.config.form_fields`):
its type, bounds, choices, title and description are the field's, so the form and the config
cannot disagree. Airflow refuses a value outside a Param's schema when the run is triggered
(REST API: HTTP 400 naming the Param); the config validates again when a task builds it, and
`source`, a choice among the directories under the deployment's data root, is confined to that
root again at run time.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from pipelines.config import DeploymentSettings, FieldSpec, PipelineConfig, form_fields
from pipelines.errors import ConfigError

SOURCE = "source"  # the Param naming data.source: a directory under the data root

# JSON schema keywords of a field's bounds and type.
_BOUND_KEYWORDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
}
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               dt.date: "string", dt.datetime: "string"}  # fmt: skip
_ISO_DATE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
_STRING_FORMATS = {
    dt.date: {"format": "date", "pattern": _ISO_DATE + "$"},
    dt.datetime: {
        "format": "date-time",
        "pattern": _ISO_DATE
        + r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$",
    },
}


# What the Airflow 3.3 trigger form does with a Param's JSON schema (`airflow/ui`, FlexibleForm):
# `minimum` / `maximum` become the number widget's min/max, which clamps an out-of-range entry
# on blur without a word (epochs 0 -> 1, max_regression 5 -> 1); a `type` without "null" marks
# the field required (an asterisk), a boolean's switch included. The REST API validates every
# Param's whole schema with jsonschema when a run is triggered (`SerializedDAG.create_dagrun`:
# HTTP 400 "Invalid input for param <name>: ..."), `allOf` included, which the form does not
# read. So a field's bounds, and a boolean's type, sit in `allOf`: the form keeps what was typed,
# the description states the range, and the trigger refuses a value outside it.
_FORM_HIDDEN = "allOf"


def param_schema(spec: FieldSpec) -> dict[str, Any]:
    """A config field as a Param's JSON schema (type, bounds, enum, format, title, section).

    Optional fields also take null ("empty": the deployment's value applies). The bounds, and a
    boolean's type, are under `allOf` (see above); the description ends with the allowed range.
    """
    json_type = _JSON_TYPES[spec.value_type]
    types = ["null", json_type] if spec.optional else json_type
    checks = {_BOUND_KEYWORDS[bound]: value for bound, value in spec.bounds.items()}
    if json_type == "boolean":
        checks = {"type": types, **checks}
    schema: dict[str, Any] = {
        **({} if json_type == "boolean" else {"type": types}),
        "title": spec.title,
        "description": _description(spec),
        "section": spec.section,
        **_STRING_FORMATS.get(spec.value_type, {}),
    }
    if checks:
        schema[_FORM_HIDDEN] = [checks]
    if spec.choices is not None:
        schema["enum"] = [None, *spec.choices] if spec.optional else list(spec.choices)
    return schema


def _description(spec: FieldSpec) -> str:
    """The field's description, then its range: the form shows it under the field."""
    text = spec.description or spec.title
    if spec.bounds:
        text += f" Allowed: {spec.allowed()}; a value outside is refused when the run is triggered."
    return text


def flat_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A Param's schema with its `allOf` checks merged in: what the trigger validates."""
    flat = {key: value for key, value in schema.items() if key != _FORM_HIDDEN}
    for checks in schema.get(_FORM_HIDDEN, []):
        flat.update(checks)
    return flat


_FORM = {spec.name: spec for spec in form_fields()}  # Param name -> field, in form order
# Param name -> (config section, field) for every Param but `source`.
PARAM_FIELDS: dict[str, tuple[str, str]] = {
    name: tuple(spec.path.split(".")) for name, spec in _FORM.items() if name != SOURCE
}
_SCHEMAS = {name: param_schema(spec) for name, spec in _FORM.items()}

# The source list: directories down to this depth under the data root, at most this many.
SOURCE_DEPTH = 3
MAX_SOURCE_CHOICES = 500


def source_choices(root: Path) -> list[str]:
    """The sources under the data root a run may read, relative to it, sorted.

    A source is a directory whose format `pipelines.sources.detect_format` recognises (a
    contract source's `interactions`, MovieLens' `u.data` / `ratings.*`); it is offered and
    not looked into (its `interactions/` partitions are not sources). Other directories
    (`movielens/`, a simulation's output beside its `landing/` source) are looked into, down to
    `SOURCE_DEPTH` levels. Hidden entries (`.name`) are left out, and so is whatever lies
    outside the root once symlinks are followed (`resolve_source` would refuse it). At most
    `MAX_SOURCE_CHOICES`, the first in sorted order.
    """
    from pipelines.errors import SourceError
    from pipelines.sources import detect_format

    root = root.resolve()
    found: list[str] = []

    def visit(directory: Path, depth: int) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError:  # unreadable: nothing to offer from it
            return
        for entry in entries:
            if len(found) >= MAX_SOURCE_CHOICES:
                return
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            resolved = entry.resolve()
            if resolved != root and root not in resolved.parents:
                continue
            try:
                detect_format(entry)
            except SourceError:  # not a source itself: maybe a group of them
                if depth < SOURCE_DEPTH:
                    visit(entry, depth + 1)
            else:
                found.append(str(entry.relative_to(root)))

    if root.is_dir():
        visit(root, 1)
    return sorted(found)


def _source_schema(cfg: PipelineConfig, root: Path | None) -> dict[str, Any]:
    """The `source` Param: empty (the deployment's source) or a directory under the data root."""
    configured = (
        f"this deployment's source {cfg.data.source} (config data.source / TTR_DATA__SOURCE)"
        if cfg.data.source
        else f"the synthetic '{cfg.synthetic.preset}' world, as no data.source / "
        "TTR_DATA__SOURCE is configured"
    )
    if root is None:
        return {
            "description": f"Directory of the raw data, relative to the data root "
            f"(TTR_DATA_ROOT); empty = {configured}. Absolute paths, URLs and '..' are refused.",
        }
    choices = source_choices(root)
    return {
        "enum": [None, *choices],
        "values_display": {"null": "(empty: the deployment's source)"},
        "description": f"A source under the data root {root.resolve()} (TTR_DATA_ROOT): a "
        "directory holding interactions or a MovieLens dump; "
        f"empty = {configured}. The list is read each time the DAG file is parsed ([dag_processor] "
        "min_file_process_interval, 30 s by default): a new source appears after that.",
    }


def param_specs(cfg: PipelineConfig, data_root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Typed Param definitions (JSON schema keywords plus a default) for the trigger form, in
    form order (section by section).

    Args:
        cfg: the deployment's config; its values are the defaults, so a run nobody edited the
            form for runs the deployment's config. `source` defaults to empty.
        data_root: the deployment's data root: `source` becomes a choice among the directories
            under it (`source_choices`), so the trigger refuses any other. None (no deployment,
            e.g. a unit test) leaves `source` a free path, confined to the root at run time only.
    """
    values = cfg.model_dump(mode="json")
    specs = {name: {**schema, "default": None} for name, schema in _SCHEMAS.items()}
    specs[SOURCE].update(_source_schema(cfg, data_root))
    for name, (section, field) in PARAM_FIELDS.items():
        specs[name]["default"] = values[section][field]
    return specs


# A source Param names a directory under the data root: printable text of bounded length.
MAX_SOURCE_CHARS = 1024
MAX_PARAM_CHARS = 1024  # any string Param; the longest legitimate one is a path
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX on Linux, macOS and the usual filesystems
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def resolve_source(value: str | None, root: Path) -> str | None:
    """A source Param as a path inside the data root.

    Raises:
        ConfigError: not a string, holding a NUL or other control character, too long, absolute,
            URL-like or escaping the root (path traversal).
    """
    if value is None or value == "":
        return None
    _check_source_text(value)
    root = root.resolve()
    if "://" in value or Path(value).is_absolute():
        raise ConfigError(f"param source={value!r}: give a path relative to the data root {root}")
    path = (root / value).resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"param source={value!r} points outside the data root {root}")
    return str(path)


def _check_source_text(value: Any) -> None:
    """Refuse what no directory under the data root can be called, before touching a path."""
    if not isinstance(value, str):
        raise ConfigError(
            f"param source: must be a string (a directory relative to the data root) or empty, "
            f"got {type(value).__name__}"
        )
    shown = _shown(value)
    if _CONTROL_CHARS.search(value):
        raise ConfigError(
            f"param source={shown}: must not contain NUL or other control characters "
            "(newline, tab, ...); give a directory name relative to the data root"
        )
    if len(value) > MAX_SOURCE_CHARS:
        raise ConfigError(
            f"param source={shown}: {len(value)} characters, at most {MAX_SOURCE_CHARS} allowed"
        )
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_COMPONENT_BYTES:
            raise ConfigError(
                f"param source={shown}: a path component is longer than "
                f"{MAX_PATH_COMPONENT_BYTES} bytes, which no filesystem allows"
            )


# JSON schema "type" of a Param -> the Python values that satisfy it (bool is not a number).
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _check_param_types(params: dict[str, Any]) -> None:
    """Each Param's value has a type its form allows (what Airflow's own Param check enforces).

    The config would otherwise coerce quietly: "yes" -> True, "5" -> 5, an integer `as_of` ->
    seconds since 1970.

    Raises:
        ConfigError: naming the Param, the types allowed and the type given.
    """
    for name, value in params.items():
        schema = flat_schema(_SCHEMAS[name])
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_json_type(value, t) for t in types):
            raise ConfigError(
                f"param {name}={_shown(value)}: must be {' or '.join(types)}, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"param {name}={_shown(value)}: must not contain a NUL character")
        if isinstance(value, str) and len(value) > MAX_PARAM_CHARS:
            raise ConfigError(
                f"param {name}={_shown(value)}: {len(value)} characters, "
                f"at most {MAX_PARAM_CHARS} allowed"
            )


def _is_json_type(value: Any, json_type: str) -> bool:
    if isinstance(value, bool):
        return json_type == "boolean"
    if json_type == "integer" and isinstance(value, float):
        return value.is_integer()  # JSON schema: 3.0 is an integer
    return isinstance(value, _PYTHON_TYPES[json_type])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def config_from_params(
    params: dict[str, Any], settings: DeploymentSettings, *, as_of: dt.datetime | None = None
) -> PipelineConfig:
    """The run's config: the deployment's YAML/env, then the trigger form's Params on top.

    Args:
        params: Param name -> value; an empty (None) value leaves the deployment's value.
        settings: the deployment (its config file, and the data root `source` is confined to).
        as_of: the point in time a backfill run replays (its logical date); an `as_of` Param
            wins over it.

    Raises:
        ConfigError: a Param is unknown, of a type its form does not allow, holds a NUL,
            is out of range or points outside the data root.
    """
    unknown = set(params) - set(_SCHEMAS)
    if unknown:
        raise ConfigError(f"unknown params: {', '.join(sorted(map(_param_name, unknown)))}")
    _check_param_types(params)
    if params.get("as_of") in (None, "") and as_of is not None:
        params = {**params, "as_of": as_of}
    overrides: dict[str, dict[str, Any]] = {}
    source = resolve_source(params.get(SOURCE), settings.data_root)
    if source is not None:
        overrides["data"] = {"source": source}
    for name, (section, field) in PARAM_FIELDS.items():
        if name in params:
            overrides.setdefault(section, {})[field] = params[name]
    return settings.load_config(overrides)


def _param_name(name: Any) -> str:
    return name if isinstance(name, str) and name.isprintable() else repr(name)


def safe_run_id(run_id: str) -> str:
    """An Airflow run id as a directory name (`manual__2026-01-01T00:00:00+00:00` -> safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).lstrip(".") or "run"
