"""Deployment settings: where the data is, which config file, how often to run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from pipelines.config.fields import error_line, field_spec
from pipelines.config.loading import load_config
from pipelines.config.sections import PipelineConfig, _Section
from pipelines.errors import ConfigError

# DeploymentSettings field -> the environment variable it is read from.
SETTINGS_ENV = {
    "data_root": "TTR_DATA_ROOT",
    "config_path": "TTR_CONFIG",
    "schedule_hours": "TTR_SCHEDULE_HOURS",
}


class DeploymentSettings(_Section):
    """Where a deployment keeps its data, its config file and how often it retrains.

    Read from the environment once, by the program that starts (`DeploymentSettings.from_env()`
    at the top of the DAG module, in `simulate`), and passed down from there.
    """

    data_root: Path = Field(
        Path("data"),
        validate_default=True,
        description="The only directory a trigger form's source may point into (resolved).",
    )
    config_path: Path | None = Field(None, description="YAML file with the pipeline config.")
    schedule_hours: int = Field(24, ge=1, le=24, description="Hours between scheduled runs.")

    @field_validator("data_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeploymentSettings:
        """The settings from `TTR_DATA_ROOT`, `TTR_CONFIG` and `TTR_SCHEDULE_HOURS`.

        Args:
            env: environment to read (default `os.environ`); unset or empty = the default.

        Raises:
            ConfigError: naming the variable, its value and the allowed range.
        """
        env = os.environ if env is None else env
        raw = {field: env[var] for field, var in SETTINGS_ENV.items() if env.get(var)}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            lines = []
            for error in exc.errors():
                field = str(error["loc"][0])
                name = f"{SETTINGS_ENV[field]}={raw[field]!r}"
                error = {**error, "input": {}}  # the name already shows the value
                lines.append(error_line(name, error, field_spec(field, cls).allowed()))
            raise ConfigError("\n".join(lines)) from None

    def load_config(self, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
        """The pipeline config: code defaults < the settings' YAML < environment < overrides."""
        return load_config(self.config_path, overrides=overrides)
