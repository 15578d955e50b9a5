"""CLI flags that set a config field are the field: same choices, same bounds, same error."""

from __future__ import annotations

import argparse

import pytest

from pipelines.cli import build_parser
from pipelines.cli.common import flag_overrides
from pipelines.config import PipelineConfig

SCHEMA = PipelineConfig.model_json_schema()


def commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def config_property(path: str) -> dict:
    """A field's non-null JSON schema branch as pydantic writes it."""
    section, field = path.split(".")
    model = SCHEMA["properties"][section]["$ref"].rpartition("/")[2]
    prop = SCHEMA["$defs"][model]["properties"][field]
    return next(b for b in prop.get("anyOf", [prop]) if b["type"] != "null")


FLAGS = sorted(
    (command, path)
    for command, parser in commands().items()
    for path in parser.get_default("config_flags") or ()
)


def test_the_step_commands_take_their_config_flags():
    flags = {command: {path for c, path in FLAGS if c == command} for command, _ in FLAGS}
    assert {"train.epochs", "train.batch_size", "train.learning_rate", "train.embedding_dim",
            "train.temperature", "train.mixed_negatives"} <= flags["train"]  # fmt: skip
    assert {"synthetic.preset", "train.epochs", "features.as_of", "data.format"} <= flags["run"]
    assert {"features.history_length", "features.shards"} <= flags["features"]
    assert {"index.target_recall", "index.k"} <= flags["index"]
    assert {"synthetic.seed", "synthetic.days", "synthetic.start_date"} <= flags["generate"]


@pytest.mark.parametrize(("command", "path"), FLAGS)
def test_flag_choices_and_bounds_are_the_config_fields(command, path, capsys):
    parser = commands()[command]
    flag = "--" + path.partition(".")[2].replace("_", "-")
    [action] = [a for a in parser._actions if flag in a.option_strings]
    prop = config_property(path)
    assert list(action.choices or []) == prop.get("enum", [])
    for keyword, outward in (("minimum", -1), ("maximum", 1),
                             ("exclusiveMinimum", 0), ("exclusiveMaximum", 0)):  # fmt: skip
        if keyword not in prop:
            continue
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([flag, str(prop[keyword] + outward)])
        message = capsys.readouterr().err
        assert exit_.value.code == 2
        assert f"argument {flag}: {path}: " in message and "; allowed: " in message, message


def test_given_flags_become_config_overrides_and_omitted_ones_stay_unset():
    args = build_parser().parse_args(["train", "--features", "f", "--model-dir", "m",
                                      "--epochs", "1000", "--learning-rate", "10"])  # fmt: skip
    overrides = flag_overrides(args)
    assert overrides["train"]["epochs"] == 1000 and overrides["train"]["learning_rate"] == 10.0
    assert overrides["train"]["batch_size"] is None and overrides["data"]["artifact_root"] is None
