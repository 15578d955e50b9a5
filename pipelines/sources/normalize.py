"""Coerce as-read tables to the contract's column types.

Values that cannot take the contract type (a timestamp "yesterday", an id 3.7, a weight "abc")
are reported as `ReadIssue`s with their file and line and left out of the snapshot, so the
checks that follow see only typed data and nothing is reported twice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.contract import (
    GENRE_SEPARATOR,
    INTERACTION_COLUMNS,
    INTERACTION_REQUIRED,
    ITEM_OPTIONAL,
    ITEM_REQUIRED,
    PARTITION,
    SOURCE_FILE,
    SOURCE_ROW,
    USER_REQUIRED,
    ReadIssue,
)

TIMESTAMP_DTYPE = "datetime64[us, UTC]"
# Contract column names, recognised in headers ignoring case and surrounding spaces.
KNOWN_COLUMNS = tuple(
    dict.fromkeys((*INTERACTION_COLUMNS, *ITEM_REQUIRED, *ITEM_OPTIONAL, *USER_REQUIRED))
)


def canonical_names(
    names: list, aliases: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Header names as the contract spells them.

    Surrounding spaces are dropped from every name; contract names (`KNOWN_COLUMNS`) and the
    format's `aliases` (e.g. MovieLens "rating" -> "weight") match ignoring case, so "rating ",
    "Weight" and "Created_At" are the columns they look like rather than unknown extras.

    Returns:
        (names, clashes): the renamed columns, and a description of each group of columns
        that became the same name (the file cannot be read unambiguously when not empty).
    """
    lookup = {name: name for name in KNOWN_COLUMNS}
    lookup.update({key.strip().lower(): value for key, value in (aliases or {}).items()})
    out = []
    for name in names:
        stripped = str(name).strip()
        out.append(lookup.get(stripped.lower(), stripped))
    clashes = []
    for name in dict.fromkeys(out):
        sources = [str(raw) for raw, new in zip(names, out, strict=True) if new == name]
        if len(sources) > 1:
            clashes.append(f"{', '.join(repr(s) for s in sources)} all mean {name!r}")
    return out, clashes


class _Located:
    """One file's frame with row locations, collecting issues as columns are coerced."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        table: str,
        file: str,
        rows: np.ndarray,
        row_label: str,
        issues: list[ReadIssue],
        sample_rows: int,
    ):
        self.frame = frame.reset_index(drop=True)
        self.table, self.file, self.rows, self.row_label = table, file, rows, row_label
        self.issues, self.sample_rows = issues, sample_rows
        self.bad = np.zeros(len(frame), dtype=bool)

    def missing_required(self, required: tuple[str, ...]) -> list[str]:
        missing = [c for c in required if c not in self.frame.columns]
        for column in missing:
            self.issues.append(
                ReadIssue(
                    table=self.table,
                    file=self.file,
                    column=column,
                    rule=f"required column '{column}' is missing (columns found: {', '.join(map(str, self.frame.columns)) or 'none'})",
                    count=len(self.frame) or 1,
                )
            )
        return missing

    def report(self, column: str, mask: np.ndarray, rule: str) -> None:
        if not mask.any():
            return
        self.bad |= mask
        where = np.flatnonzero(mask)
        values = self.frame[column].to_numpy()
        samples = tuple(
            f"{self.row_label} {self.rows[i]}: {_shown(values[i])}"
            for i in where[: self.sample_rows]
        )
        self.issues.append(
            ReadIssue(
                table=self.table,
                file=self.file,
                column=column,
                rule=rule,
                count=int(mask.sum()),
                samples=samples,
            )
        )

    def ids(self, column: str) -> pd.Series:
        values, bad = coerce_ids(self.frame[column])
        self.report(column, bad, "ids must be strings or integers")
        return values

    def weights(self, column: str) -> pd.Series:
        raw = self.frame[column]
        weight = pd.to_numeric(raw, errors="coerce").astype(float)
        present = raw.notna().to_numpy()
        values = weight.to_numpy()
        self.report(column, present & np.isnan(values), "weights must be numbers")
        self.report(
            column,
            ~present | np.isinf(values),
            "weights must not be empty, NaN or infinite",
        )
        return weight

    def timestamps(self, column: str) -> pd.Series:
        values, bad = coerce_timestamps(self.frame[column])
        self.report(
            column, bad, "timestamps must be datetimes, ISO-8601 strings or integer epoch seconds"
        )
        return values


def coerce_ids(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Ids as strings; integers are accepted, integral floats (NaN-widened ints) too.

    Returns:
        (ids as a str Series with NaN for missing, bool mask `[n]` of values that are not ids).
    """
    notna = raw.notna().to_numpy()
    if pd.api.types.is_bool_dtype(raw):
        return pd.Series(np.nan, index=raw.index, dtype=str), notna
    if pd.api.types.is_integer_dtype(raw):
        return raw.astype(str), np.zeros(len(raw), dtype=bool)
    if pd.api.types.is_float_dtype(raw):
        values = raw.to_numpy(dtype=float)
        integral = notna & np.isfinite(values) & (np.floor(values) == values)
        out = pd.Series(np.nan, index=raw.index, dtype=object)
        out[integral] = values[integral].astype(np.int64).astype(str)
        return out.astype(str), notna & ~integral
    out = raw.astype(str)
    return out.where(notna), np.zeros(len(raw), dtype=bool)


def coerce_timestamps(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Timestamps as UTC datetimes from datetimes (naive = UTC), epoch seconds or ISO-8601.

    Returns:
        (datetime64[us, UTC] Series with NaT for missing, bool mask `[n]` of unparseable values).
    """
    notna = raw.notna().to_numpy()
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(raw):
        parsed = raw.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        parsed = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    else:
        text = raw.astype(str).where(notna)
        numeric = text.str.fullmatch(r"-?\d+(\.\d+)?").fillna(False).to_numpy(dtype=bool)
        parsed = pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE)
        if numeric.any():
            parsed[numeric] = pd.to_datetime(
                text[numeric].astype(float), unit="s", utc=True, errors="coerce"
            )
        others = notna & ~numeric
        if others.any():
            parsed[others] = pd.to_datetime(
                text[others], utc=True, format="ISO8601", errors="coerce"
            )
    parsed = parsed.astype(TIMESTAMP_DTYPE)
    return parsed, notna & parsed.isna().to_numpy()


def normalize_interactions(
    frame: pd.DataFrame,
    *,
    file: str,
    rows: np.ndarray,
    row_label: str,
    partition: str | None,
    default_event: str,
    issues: list[ReadIssue],
    sample_rows: int = 5,
    require_weight: bool = False,
) -> pd.DataFrame | None:
    """Type one file's interactions (or one block of its rows); None when a required column is
    missing.

    Args:
        frame: the file's rows as read (any dtypes).
        file: path, for messages and the `source_file` column.
        rows: int array `[len(frame)]` of line (text) or row (Parquet) numbers.
        row_label: "line" or "row".
        partition: the file's `dt=` partition, or None.
        default_event: event name when the file has no `event` column.
        issues: list the read issues are appended to.
        require_weight: the format always has a weight (MovieLens ratings): a missing column is
            an issue, not "every weight is 1.0".

    Returns:
        Contract columns plus `dt`, `source_file`, `source_row`; untypeable rows removed.
    """
    loc = _Located(
        frame,
        table="interactions",
        file=file,
        rows=rows,
        row_label=row_label,
        issues=issues,
        sample_rows=sample_rows,
    )
    required = (*INTERACTION_REQUIRED, "weight") if require_weight else INTERACTION_REQUIRED
    if loc.missing_required(required):
        return None
    out = pd.DataFrame(
        {
            "user_id": loc.ids("user_id"),
            "item_id": loc.ids("item_id"),
            "timestamp": loc.timestamps("timestamp"),
        }
    )
    if "event" in loc.frame.columns:
        event = loc.frame["event"]
        loc.report(
            "event",
            event.isna().to_numpy(),
            "event must not be empty (the file has an event column, so every row needs one)",
        )
        out["event"] = pd.Categorical(event.astype(str))
    else:
        out["event"] = _constant(default_event, len(out))
    # No weight column means unweighted events (1.0); a column with holes is not that.
    out["weight"] = loc.weights("weight") if "weight" in loc.frame.columns else 1.0
    out[PARTITION] = _constant(partition, len(out))
    out[SOURCE_FILE] = _constant(file, len(out))
    out[SOURCE_ROW] = rows.astype(np.int64)
    if loc.bad.any():
        out = out.loc[~loc.bad].reset_index(drop=True)
    return out


def normalize_items(
    frame: pd.DataFrame,
    *,
    file: str,
    rows: np.ndarray,
    row_label: str,
    issues: list[ReadIssue],
    sample_rows: int = 5,
) -> pd.DataFrame | None:
    """Type the item catalog: `item_id`, `title`, `genres` ("|"-joined), `created_at`, extras.

    Returns:
        The typed catalog, or None when `item_id` is missing (no catalog to check against).
    """
    loc = _Located(
        frame,
        table="items",
        file=file,
        rows=rows,
        row_label=row_label,
        issues=issues,
        sample_rows=sample_rows,
    )
    missing = loc.missing_required(ITEM_REQUIRED)
    if "item_id" in missing:
        return None
    out = loc.frame.copy()
    out["item_id"] = loc.ids("item_id")
    out["title"] = (
        out["title"].astype(str).where(out["title"].notna(), "") if "title" in out else ""
    )
    out["genres"] = join_genres(out["genres"]) if "genres" in out else ""
    if "created_at" in out:
        out["created_at"] = loc.timestamps("created_at")
    else:
        out["created_at"] = pd.Series(pd.NaT, index=out.index, dtype=TIMESTAMP_DTYPE)
    out[SOURCE_ROW] = rows.astype(np.int64)
    return out.loc[~loc.bad].reset_index(drop=True)


def normalize_users(
    frame: pd.DataFrame,
    *,
    file: str,
    rows: np.ndarray,
    row_label: str,
    issues: list[ReadIssue],
    sample_rows: int = 5,
) -> pd.DataFrame | None:
    """Type the optional users table: `user_id` plus categorical features as strings."""
    loc = _Located(
        frame,
        table="users",
        file=file,
        rows=rows,
        row_label=row_label,
        issues=issues,
        sample_rows=sample_rows,
    )
    if loc.missing_required(USER_REQUIRED):
        return None
    out = loc.frame.copy()
    out["user_id"] = loc.ids("user_id")
    for column in out.columns:
        if column != "user_id":
            out[column] = out[column].astype(str).where(out[column].notna())
    out[SOURCE_ROW] = rows.astype(np.int64)
    return out.loc[~loc.bad].reset_index(drop=True)


def _constant(value: str | None, n: int) -> pd.Categorical:
    """`value` on every one of `n` rows at one byte per row (None: all missing)."""
    if value is None:
        return pd.Categorical.from_codes(
            np.full(n, -1, dtype=np.int8), categories=pd.Index([], dtype=str)
        )
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value])


def join_genres(raw: pd.Series) -> pd.Series:
    """Genres/tags as one "|"-joined string, from lists/arrays or already-joined strings."""

    def one(value) -> str:
        if isinstance(value, (list, tuple, np.ndarray)):
            return GENRE_SEPARATOR.join(str(v) for v in value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        return str(value)

    return raw.map(one).astype(str)


def _shown(value) -> str:
    """A value as a message quotes it: repr of plain Python values, "(empty)" for missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "(empty)"
    return repr(_plain(value))


def _plain(value):
    """numpy scalars as plain Python values, so messages read `0.5`, not `np.float64(0.5)`."""
    return value.item() if isinstance(value, np.generic) else value
