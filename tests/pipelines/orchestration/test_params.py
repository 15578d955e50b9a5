"""The trigger form is the config: every Param's type, bounds, choices and section equal the
config field's, read here from pydantic's own JSON schema of `PipelineConfig`; and the form is
one a person understands in Airflow 3.3's UI (titles, sections, ranges, no silent clamping, the
sources that exist)."""

from __future__ import annotations

import argparse
import os

import pytest

from pipelines import orchestration as orch
from pipelines.config import DeploymentSettings, PipelineConfig, load_config
from pipelines.config.sections import FORM_SECTIONS
from pipelines.errors import ConfigError
from pipelines.orchestration.params import flat_schema, source_choices

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
    spec = flat_schema(SPECS[name])
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


def ui_required(spec: dict) -> bool:
    """Airflow 3.3's form marks a field required (asterisk) when its schema has a type without
    "null" (`ui/dist`: `!!schema.type && (!isArray(type) || !type.includes("null"))`)."""
    kind = spec.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def test_sections_in_order_and_every_field_titled_and_explained():
    sections = list(dict.fromkeys(spec["section"] for spec in SPECS.values()))
    assert sections == list(FORM_SECTIONS) == ["Data", "Training", "Gate and promotion", "Safety"]
    assert {n for n, s in SPECS.items() if s["section"] == "Safety"} == {"force_promote", "dry_run"}
    for name, (section, field) in FIELDS.items():
        declared = PipelineConfig.model_fields[section].annotation.model_fields[field].title
        assert declared and SPECS[name]["title"] == declared, name  # a title, not the field name
        assert len(SPECS[name]["description"]) > 40, name


def test_the_form_states_units_ranges_and_the_gated_metric():
    assert "(days)" in SPECS["window_days"]["title"] and "(days)" in SPECS["eval_days"]["title"]
    for name in ("min_lift_over_popularity", "max_regression", "min_ann_recall"):
        assert "(fraction)" in SPECS[name]["title"], name
    for name in ("min_lift_over_popularity", "max_regression"):
        assert "eval.primary_metric" in SPECS[name]["description"]
        assert "recall@100 on the eval queries" in SPECS[name]["description"]
    assert "Allowed: 1 <= x <= 1000" in SPECS["epochs"]["description"]
    assert "Allowed: 0.0 < x <= 10.0" in SPECS["learning_rate"]["description"]


def test_force_promote_is_marked_dangerous():
    spec = SPECS["force_promote"]
    assert "dangerous" in spec["title"].lower()
    assert "DANGEROUS" in spec["description"] and "recorded" in spec["description"]
    assert "restore service" in spec["description"]


def test_no_asterisk_on_booleans_and_no_clamping_widget_bounds():
    """The number widget clamps to `minimum`/`maximum` on blur: bounds must not be top-level;
    a boolean's type must not be either (asterisk). Both are still checked (under allOf)."""
    for name, spec in SPECS.items():
        assert not {"minimum", "maximum"} & set(spec), name
    booleans = [n for n, s in SPECS.items() if flat_schema(s)["type"] == "boolean"]
    assert booleans == ["force_promote", "dry_run"]
    assert not any(ui_required(SPECS[name]) for name in booleans)
    assert ui_required(SPECS["epochs"]) and not ui_required(SPECS["window_days"])


def test_the_cli_help_reads_the_same_descriptions():
    from pipelines.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    [epochs] = [a for a in sub.choices["train"]._actions if "--epochs" in a.option_strings]
    description = PipelineConfig.model_fields["train"].annotation.model_fields["epochs"].description
    assert epochs.help.startswith(description)


@pytest.fixture
def data_root(tmp_path):
    """A data root: sources, a group of sources, a source beside files, an empty and a hidden
    dir, a symlink out of it."""
    root = tmp_path / "data"
    (root / "world" / "interactions" / "dt=2026-01-01").mkdir(parents=True)
    (root / "world" / "items.parquet").write_bytes(b"")
    (root / "movielens" / "ml-100k").mkdir(parents=True)
    (root / "movielens" / "ml-100k" / "u.data").write_text("")
    (root / "simulation" / "landing" / "interactions").mkdir(parents=True)  # a source in
    (root / "simulation" / "simulation.json").write_text("{}")  # a directory of outputs
    (root / "empty").mkdir()  # nothing a reader could read
    (root / ".cache" / "x").mkdir(parents=True)
    (root / "README").write_text("")
    os.symlink(tmp_path, root / "outside")
    return root


def test_source_is_a_choice_among_the_directories_under_the_data_root(data_root):
    sources = ["movielens/ml-100k", "simulation/landing", "world"]
    assert source_choices(data_root) == sources
    spec = orch.param_specs(load_config(env={}), data_root)["source"]
    assert spec["enum"] == [None, *sources]
    assert spec["default"] is None and not ui_required(spec)
    assert "TTR_DATA__SOURCE" in spec["description"] and "synthetic 'small'" in spec["description"]
    assert "parsed" in spec["description"]
    assert source_choices(data_root / "missing") == []


def test_the_source_form_names_the_deployments_source(data_root):
    cfg = load_config(env={}, overrides={"data": {"source": str(data_root / "world")}})
    spec = orch.param_specs(cfg, data_root)["source"]
    assert f"source {data_root / 'world'}" in spec["description"]


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../x", "outside", ".cache", "world/interactions"]
)
def test_a_source_not_listed_is_refused_by_the_param(value, data_root):
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    param = Param(**orch.param_specs(load_config(env={}), data_root)["source"])
    with pytest.raises(ParamValidationError):
        param.resolve(value)
    assert param.resolve("movielens/ml-100k") == "movielens/ml-100k"
