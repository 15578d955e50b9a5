"""Shared flags and config loading for the CLI commands.

Flags that set a config field are generated from the field (`config_flags`): name, type,
choices, allowed range and help come from `pipelines.config`, and `load` applies them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import FeatureEngine, FieldSpec, PipelineConfig, field_spec, load_config
from pipelines.errors import ConfigError, UsageError


def command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help: str,
) -> argparse.ArgumentParser:
    """Add the subcommand `name` run by `handler`, with the flags every command takes
    (`common`). Its `--help` description is the handler's docstring: what the command does
    is written once, where it is done."""
    parser = sub.add_parser(
        name,
        help=help,
        description=inspect.getdoc(handler),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(parser)
    parser.set_defaults(handler=handler)
    return parser


def common(parser: argparse.ArgumentParser) -> None:
    """Flags every command takes: `--config` and `--artifact-root`."""
    parser.add_argument("--config", type=Path, help="YAML config file")
    config_flags(parser, "data.artifact_root")


def source_args(parser: argparse.ArgumentParser) -> None:
    """`--source DIR` and `--format` for the commands that read a raw source."""
    parser.add_argument(
        "--source", type=Path, help="source directory (or data.source in the config)"
    )
    config_flags(parser, "data.format")


def engine_arg(parser: argparse.ArgumentParser) -> None:
    """`--engine`: the feature job on Beam or on the single-process reference."""
    parser.add_argument(
        "--engine",
        choices=typing.get_args(FeatureEngine),
        default="beam",
        help="feature job: beam (default) or the single-process reference (same outputs)",
    )


def config_flags(parser: argparse.ArgumentParser, *paths: str) -> None:
    """Add one flag per config field: `"train.batch_size"` -> `--batch-size` (`args.batch_size`).

    The flag takes the field's type and Literal choices (a bool field becomes `--x/--no-x`); its
    help is the field's description, allowed range and default. A value outside the range is a
    usage error worded as a config error (`train.epochs: Input should be ...; allowed: 1 <= x <=
    1000`, exit 2). An omitted flag leaves the field to the lower config layers.
    """
    for path in paths:
        spec = field_spec(path)
        flag = "--" + spec.name.replace("_", "-")
        if spec.value_type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=_flag_help(spec))
        else:
            parser.add_argument(
                flag, type=_flag_value(spec), choices=spec.choices, help=_flag_help(spec)
            )
    parser.set_defaults(config_flags=(*(parser.get_default("config_flags") or ()), *paths))


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config flags of the parsed command as `load_config` overrides (None = not given)."""
    overrides: dict[str, dict[str, Any]] = {}
    for path in getattr(args, "config_flags", ()):
        section, name = path.split(".")
        overrides.setdefault(section, {})[name] = getattr(args, name)
    return overrides


_FLAG_PARSERS: dict[type, Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    dt.date: dt.date.fromisoformat,
    dt.datetime: lambda text: utc_timestamp(text),
}


def _flag_value(spec: FieldSpec) -> Callable[[str], Any]:
    """Parse a flag's text as the field's type and check it against the field's rules."""
    parse = _FLAG_PARSERS[spec.value_type]

    def value(text: str) -> Any:
        try:
            typed = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {spec.value_type.__name__} value: {text!r}"
            ) from None
        try:
            spec.validate(typed)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return typed

    return value


def _flag_help(spec: FieldSpec) -> str:
    facts = [spec.path]
    if spec.choices is None and (allowed := spec.allowed()):
        facts.append(allowed)
    if spec.default is not None:
        facts.append(f"default {spec.default}")
    return f"{spec.description or spec.title} ({'; '.join(facts)})".replace("%", "%%")


def load_with_source(args, **sections) -> PipelineConfig:
    """Config with --source applied; a missing source is a usage error."""
    source = str(args.source) if args.source else None
    cfg = load(args, data={"source": source}, **sections)
    if cfg.data.source is None:
        raise UsageError("give --source DIR (or data.source in the config)")
    return cfg


def load(args, **sections) -> PipelineConfig:
    """The command's config: `--config` YAML < env < the config flags given < `sections`.

    Args:
        sections: further overrides, e.g. `gate={"force_promote": True}`; None values are unset.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for layer in (flag_overrides(args), sections):
        for section, values in layer.items():
            given = {name: value for name, value in values.items() if value is not None}
            overrides.setdefault(section, {}).update(given)
    return load_config(args.config, overrides=overrides)


def progress(step: str) -> Callable[[int, int, int], None]:
    interactive = sys.stderr.isatty()

    def report(day: int, days: int, events: int) -> None:
        width = 30
        done = int(width * (day + 1) / days)
        line = (
            f"{step}: [{'#' * done}{'.' * (width - done)}] day {day + 1}/{days} ({events:,} events)"
        )
        end = "\r" if interactive and day + 1 < days else "\n"
        if interactive or (day + 1) % max(1, days // 4) == 0 or day + 1 == days:
            print(line, end=end, file=sys.stderr, flush=True)

    return report


def utc_timestamp(text: str):
    from pipelines.schema import utc_timestamp

    try:
        return utc_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None
