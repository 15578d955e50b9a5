"""Typed config: layering order and errors that name the field and the allowed range."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.config import PipelineConfig, allowed_values, load_config
from pipelines.errors import ConfigError


def test_defaults_are_valid():
    cfg = load_config(env={})
    assert cfg == PipelineConfig()
    assert cfg.synthetic.preset == "small" and cfg.checks.max_duplicate_rate == 0.001


def test_layers_yaml_then_env_then_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("synthetic:\n  preset: medium\n  seed: 3\nchecks:\n  volume_max_ratio: 6\n")
    env = {"TTR_SYNTHETIC__SEED": "4", "TTR_CHECKS__SAMPLE_ROWS": "9", "OTHER": "x"}
    cfg = load_config(path, env=env, overrides={"synthetic": {"seed": 5, "days": None}})
    assert cfg.synthetic.preset == "medium"  # from YAML
    assert cfg.checks.volume_max_ratio == 6.0  # from YAML
    assert cfg.checks.sample_rows == 9  # from env
    assert cfg.synthetic.seed == 5  # override beats env beats YAML
    assert cfg.synthetic.days is None  # a None override does not mask lower layers


def test_env_values_are_typed():
    cfg = load_config(env={"TTR_SYNTHETIC__START_DATE": "2025-06-01", "TTR_DATA__FORMAT": "ml-1m"})
    assert cfg.synthetic.start_date == dt.date(2025, 6, 1)
    assert cfg.data.format == "ml-1m"


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        ({"checks": {"max_duplicate_rate": 1.5}}, "checks.max_duplicate_rate", "0.0 <= x <= 1.0"),
        ({"synthetic": {"days": 0}}, "synthetic.days", "1 <= x <= 730"),
        ({"checks": {"volume_min_ratio": 0}}, "checks.volume_min_ratio", "0.0 < x <= 1.0"),
        ({"synthetic": {"preset": "huge"}}, "synthetic.preset", "'small' | 'medium' | 'large'"),
    ],
)
def test_out_of_range_values_name_field_and_range(overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides=overrides)
    message = str(err.value)
    assert field in message and allowed in message


def test_unknown_keys_and_bad_yaml_fail_at_load(tmp_path):
    with pytest.raises(ConfigError, match="checks.max_dup_rate"):
        load_config(env={}, overrides={"checks": {"max_dup_rate": 0.1}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", env={})


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="weight_min"):
        load_config(env={}, overrides={"checks": {"weight_min": 5, "weight_max": 1}})


def test_allowed_values_describes_bounds():
    assert allowed_values("checks.sample_rows") == "1 <= x <= 100"
    assert allowed_values("data.source") is None
    assert allowed_values("nope.field") is None
