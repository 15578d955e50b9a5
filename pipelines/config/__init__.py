"""One typed, validated configuration for every step.

Layers, later ones win: defaults in code < YAML file < environment (`TTR_<SECTION>__<FIELD>`)
< explicit overrides (CLI flags, Airflow Params). The merged result is validated once, on
loading, and a bad value fails naming the field, the value and the allowed range.

Modules: `sections` (the models: fields, bounds, choices, descriptions, form sections),
`loading` (`load_config`), `fields` (what each field declares, for the form and the CLI flags),
`deployment` (`DeploymentSettings`, read from the environment once at the edge).
"""

from pipelines.config.deployment import SETTINGS_ENV, DeploymentSettings
from pipelines.config.fields import FieldSpec, allowed_values, field_spec, form_fields
from pipelines.config.loading import ENV_PREFIX, load_config
from pipelines.config.sections import (
    BeamConfig,
    ChecksConfig,
    DataConfig,
    DirectRunningMode,
    EvalConfig,
    EvalDesign,
    FeatureEngine,
    FeaturesConfig,
    GateConfig,
    HistoryPooling,
    IndexConfig,
    Optimizer,
    PipelineConfig,
    Preset,
    PromotionConfig,
    PromotionMode,
    RegistryConfig,
    SourceFormat,
    SyntheticConfig,
    TrainConfig,
    Weighting,
)

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_ENV",
    "BeamConfig",
    "ChecksConfig",
    "DataConfig",
    "DeploymentSettings",
    "DirectRunningMode",
    "EvalConfig",
    "EvalDesign",
    "FeatureEngine",
    "FeaturesConfig",
    "FieldSpec",
    "GateConfig",
    "HistoryPooling",
    "IndexConfig",
    "Optimizer",
    "PipelineConfig",
    "Preset",
    "PromotionConfig",
    "PromotionMode",
    "RegistryConfig",
    "SourceFormat",
    "SyntheticConfig",
    "TrainConfig",
    "Weighting",
    "allowed_values",
    "field_spec",
    "form_fields",
    "load_config",
]
