"""Shared flags and config loading for the CLI commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.config import PipelineConfig, load_config
from pipelines.errors import UsageError


def common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--artifact-root", help="root for runs/ and registry/ (default: artifacts)")


def as_of_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=utc_timestamp,
        help="see only what existed before this moment (ISO, UTC): later interactions and "
        "items are ignored, as in a backfill (features.as_of)",
    )


def source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", type=Path, help="source directory (or data.source in the config)"
    )
    parser.add_argument(
        "--format",
        choices=["auto", "contract", "ml-100k", "ml-1m", "ml-latest"],
        help="source format (default: auto-detect)",
    )


def load_with_source(args, **sections) -> PipelineConfig:
    """Config with --source/--format applied; a missing source is a usage error."""
    source = str(args.source) if args.source else None
    cfg = load(args, data={"source": source, "format": args.format}, **sections)
    if cfg.data.source is None:
        raise UsageError("give --source DIR (or data.source in the config)")
    return cfg


def load(args, **sections) -> PipelineConfig:
    data = {"artifact_root": args.artifact_root, **sections.pop("data", {})}
    overrides = {"data": data, **sections}
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
