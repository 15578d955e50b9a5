"""The trigger form is the config: every Param's type, bounds, choices and section equal the
config field's, read here from pydantic's own JSON schema of `PipelineConfig`."""

from __future__ import annotations

import pytest

from pipelines import orchestration as orch
from pipelines.config import DeploymentSettings, PipelineConfig, load_config
from pipelines.errors import ConfigError

SCHEMA = PipelineConfig.model_json_schema()
KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "format")


def config_property(section: str, field: str) -> dict:
    """A config field's JSON schema as pydantic writes it (Optional = anyOf [..., null])."""
    model = SCHEMA["properties"][section]["$ref"].rpartition("/")[2]
    return SCHEMA["$defs"][model]["properties"][field]


def flattened(prop: dict) -> tuple[set[str], dict]:
    """(JSON types, the non-null branch's keywords) of a property, Optional or not."""
    branches = prop.get("anyOf", [prop])
    types = {b["type"] for b in branches}
    [value] = [b for b in branches if b["type"] != "null"]
    return types, value


def on_form() -> dict[str, tuple[str, str]]:
    """Every config field pydantic's schema shows with a form section: Param name (the field's
    declared `name`, else its own) -> (section, field)."""
    return {
        prop.get("name", field): (section, field)
        for section, ref in SCHEMA["properties"].items()
        for field, prop in SCHEMA["$defs"][ref["$ref"].rpartition("/")[2]]["properties"].items()
        if "section" in prop
    }


SPECS = orch.param_specs(load_config(env={}))
FIELDS = on_form()


def test_the_form_shows_exactly_the_fields_declared_with_a_section():
    assert set(SPECS) == set(FIELDS)
    assert set(orch.PARAM_FIELDS) == set(FIELDS) - {"source"}
    assert all(orch.PARAM_FIELDS[name] == FIELDS[name] for name in orch.PARAM_FIELDS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_param_type_bounds_and_enum_equal_the_config_field(name):
    types, constraints = flattened(config_property(*FIELDS[name]))
    spec = SPECS[name]
    param_types = set(spec["type"]) if isinstance(spec["type"], list) else {spec["type"]}
    assert param_types == types
    for keyword in KEYWORDS:
        assert spec.get(keyword) == constraints.get(keyword), keyword
    assert spec["section"] == config_property(*FIELDS[name])["section"]
    assert spec["description"]


def boundary_cases():
    """(name, value, accepted) at and just past every declared bound of a form field."""
    for name, (section, field) in sorted(FIELDS.items()):
        _, c = flattened(config_property(section, field))
        step = 1 if c["type"] == "integer" else 1e-9
        for keyword, inside in (("minimum", True), ("maximum", True),
                                ("exclusiveMinimum", False), ("exclusiveMaximum", False)):  # fmt: skip
            if keyword in c:
                outward = -step if "inimum" in keyword else step
                yield name, c[keyword], inside
                yield name, c[keyword] + outward, False
        for choice in c.get("enum", []):
            yield name, choice, True


@pytest.mark.parametrize(("name", "value", "accepted"), list(boundary_cases()))
def test_form_and_config_accept_and_refuse_the_same_values(name, value, accepted, tmp_path):
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    settings = DeploymentSettings(data_root=tmp_path)
    if accepted:
        Param(**SPECS[name]).resolve(value)
        orch.config_from_params({name: value}, settings)
        return
    with pytest.raises(ParamValidationError):
        Param(**SPECS[name]).resolve(value)
    with pytest.raises(ConfigError, match=".".join(FIELDS[name])):
        orch.config_from_params({name: value}, settings)
