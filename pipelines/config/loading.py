"""Loading the config: code defaults < YAML file < environment < overrides, validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipelines.config.fields import allowed_values, error_line
from pipelines.config.sections import PipelineConfig
from pipelines.errors import ConfigError

ENV_PREFIX = "TTR_"


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Build the validated config from defaults, a YAML file, the environment and overrides.

    Args:
        path: optional YAML file with the same nesting as `PipelineConfig`.
        env: environment to read `TTR_<SECTION>__<FIELD>` variables from (default `os.environ`).
        overrides: nested mapping, e.g. `{"synthetic": {"preset": "medium"}}`; `None` values are
            ignored so unset CLI flags do not mask lower layers.

    Returns:
        A validated `PipelineConfig`.

    Raises:
        ConfigError: unreadable YAML, unknown keys, or values outside their allowed range.
    """
    merged: dict[str, Any] = {}
    if path is not None:
        merged = _deep_merge(merged, _read_yaml(Path(path)))
    merged = _deep_merge(merged, _env_layer(os.environ if env is None else env))
    merged = _deep_merge(merged, _drop_none(overrides or {}))
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source=str(path) if path else None)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    # Each "__" is one level: TTR_BEAM__OPTIONS__FLINK_MASTER -> beam.options.flink_master.
    # Shallower keys first, so TTR_BEAM__OPTIONS='{...}' and TTR_BEAM__OPTIONS__X=... combine.
    keys = [key for key in env if key.startswith(ENV_PREFIX) and "__" in key]
    for key in sorted(keys, key=lambda k: (k.count("__"), k)):
        *parents, field = key[len(ENV_PREFIX) :].lower().split("__")
        node = layer
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        # YAML parsing turns "0.5" into a float and "true" into a bool, like the file layer.
        node[field] = yaml.safe_load(env[key]) if env[key] != "" else None
    return layer


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out[key] = _drop_none(value)
        elif value is not None:
            out[key] = value
    return out


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError, source: str | None) -> str:
    lines = [f"invalid configuration{f' in {source}' if source else ''}:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(root)"
        lines.append(f"  {error_line(field, error, allowed_values(field))}")
    return "\n".join(lines)
