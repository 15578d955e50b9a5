"""Project exceptions. Every message is written for a person: what, where, which rule, what to do."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(PipelineError):
    """A configuration value is missing, malformed or out of its allowed range."""


class UsageError(PipelineError):
    """The command line is incomplete or contradictory (the CLI exits with code 2)."""


class SourceError(PipelineError):
    """A data source cannot be read at all (missing directory, unknown format, no interactions)."""


class DataValidationError(PipelineError):
    """Input data broke one or more data-contract rules.

    Attributes:
        report: the `ValidationReport` with every failed check (file, column, rule, samples).
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class PromotionConflict(PipelineError):
    """Production changed after a run was gated: the compare-and-swap on the pointer refused.

    Attributes:
        bundle_id: the bundle that was to be promoted.
        expected: the champion the run was gated against (None: no production then).
        current: the bundle production names now (None: no production).
    """

    def __init__(self, message: str, bundle_id: str, expected: str | None, current: str | None):
        super().__init__(message)
        self.bundle_id = bundle_id
        self.expected = expected
        self.current = current


class BundleIntegrityError(PipelineError):
    """A bundle's files no longer hash to its manifest's content hash; it is not loaded."""
