"""`two-tower` / `python -m pipelines`: one subcommand per pipeline step.

The CLI only parses flags into the config and calls one library function per step.
Exit codes: 0 success, 1 the step ran and said no (data refused by the checks, the gate kept
production, production changed under a promotion), 2 bad usage, bad config, unreadable input or
an environment failure (disk full, permissions). Never a traceback for any of these.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipelines.cli import data, model, registry, run
from pipelines.errors import PipelineError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "features":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment said no: disk full, permissions, quota
        print(f"error: {_describe_os_error(exc)}; production unchanged", file=sys.stderr)
        return 2


def _describe_os_error(exc: OSError) -> str:
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full{where}: free space (or `two-tower registry gc`) and re-run"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{where}"


_OUR_PACKAGES = {"pipelines", "data_checks", "tfrs_models", "scann_index", "dags"}


def _configure_logging(verbose: bool) -> None:
    """Our steps log at INFO; libraries (GX, TensorFlow, Beam) only from WARNING unless -v."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(
            lambda record: (
                record.levelno >= logging.WARNING or record.name.split(".")[0] in _OUR_PACKAGES
            )
        )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="two-tower",
        description="Retraining pipeline for two-tower candidate retrieval.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config layers: defaults < --config YAML < TTR_<SECTION>__<FIELD> env vars < flags.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (data, model, registry, run):
        group.add_commands(sub)
    return parser
