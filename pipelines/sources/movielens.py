"""Readers for the MovieLens dumps, normalized to the contract.

Every rating is kept as an interaction: the rating becomes its `weight` and the event is
"rating". Ids become strings. Titles and genres become the item's content features; the
100K release date becomes `created_at`. Ratings files are read and typed block by block.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contract import (
    GENRE_SEPARATOR,
    RawSnapshot,
    ReadIssue,
    empty_partitions,
    merge_issues,
)
from pipelines.sources.columns import InteractionColumns, count_rows, empty_interactions
from pipelines.sources.normalize import normalize_interactions, normalize_items, normalize_users
from pipelines.sources.text import DelimitedFile

RATING_EVENT = "rating"
# u.genre's order in the 100K release (used when u.genre itself is absent).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRES = "(no genres listed)"
RATING_COLUMNS = ["user_id", "item_id", "weight", "timestamp"]
# MovieLens latest headers -> contract names (matched ignoring case and surrounding spaces).
LATEST_ALIASES = {"userId": "user_id", "movieId": "item_id", "rating": "weight"}


@dataclasses.dataclass(frozen=True)
class _Dialect:
    """How one dump writes its text files."""

    sep: str
    encoding: str
    quoted: bool


_ML100K = _Dialect(sep="|", encoding="latin-1", quoted=False)
_ML1M = _Dialect(sep="::", encoding="latin-1", quoted=False)
_LATEST = _Dialect(sep=",", encoding="utf-8", quoted=True)


class _Reader:
    """Reads one dump's files, collecting every read issue in one list."""

    def __init__(self, root: Path, sample_rows: int):
        self.root, self.sample_rows = root, sample_rows
        self.issues: list[ReadIssue] = []

    def file(self, name: str, table: str, dialect: _Dialect, *, names=None, required=True):
        """A `DelimitedFile` for one of the dump's files, or None when it is absent."""
        path = self.root / name
        if not path.is_file():
            if required:
                self.issue(table, name, f"file {name} is required for this format")
            return None
        return DelimitedFile(
            path,
            table=table,
            sep=dialect.sep,
            names=names,
            aliases=LATEST_ALIASES,
            encoding=dialect.encoding,
            quoted=dialect.quoted,
            sample_rows=self.sample_rows,
        )

    def table(self, name: str, table: str, dialect: _Dialect, *, names=None, required=True):
        """(frame of strings, line numbers) of one whole file, or None when absent/unreadable."""
        text = self.file(name, table, dialect, names=names, required=required)
        if text is None:
            return None
        loaded = text.read()
        self.issues.extend(loaded.issues)
        return None if loaded.frame is None else (loaded.frame, loaded.lines)

    def issue(self, table: str, name: str, rule: str, count: int = 1, samples=(), column=None):
        self.issues.append(
            ReadIssue(
                table=table,
                file=str(self.root / name),
                column=column,
                rule=rule,
                count=count,
                samples=tuple(samples),
            )
        )

    def normalized(self, normalize, name: str, loaded, **kwargs):
        if loaded is None:
            return None
        frame, lines = loaded
        return normalize(
            frame,
            file=str(self.root / name),
            rows=lines,
            row_label="line",
            issues=self.issues,
            sample_rows=self.sample_rows,
            **kwargs,
        )

    def ratings(self, name: str, dialect: _Dialect, *, names=None) -> pd.DataFrame | None:
        """Every rating of `name`, typed block by block (a rating column is required)."""
        text = self.file(name, "interactions", dialect, names=names)
        if text is None:
            return None
        columns = InteractionColumns(count_rows([text.path]))
        try:
            for chunk in text.chunks():
                typed = self.normalized(
                    normalize_interactions,
                    name,
                    (chunk.frame, chunk.lines),
                    partition=None,
                    default_event=RATING_EVENT,
                    require_weight=True,
                )
                if typed is not None:
                    columns.add(typed)
        finally:
            self.issues.extend(text.issues)
        return columns.frame()

    def movies(self, name: str, dialect: _Dialect, *, names=None):
        """Items from a `movieId, title, genres` file ("(no genres listed)" becomes "")."""
        loaded = self.table(name, "items", dialect, names=names)
        if loaded is not None and "genres" in loaded[0]:
            genres = loaded[0]["genres"]
            loaded[0]["genres"] = genres.where(genres != NO_GENRES, "")
        return self.normalized(normalize_items, name, loaded)

    def snapshot(self, fmt, ratings, items, users, weight_range, table_files) -> RawSnapshot:
        return RawSnapshot(
            format=fmt,
            root=str(self.root),
            interactions=ratings if ratings is not None else empty_interactions(),
            items=items,
            users=users,
            partitions=empty_partitions(),
            issues=merge_issues(self.issues, self.sample_rows),
            weight_range=weight_range,
            table_files={t: str(self.root / name) for t, name in table_files.items()},
        )


def read_ml100k(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens 100K: `u.data` (tab), `u.item` and `u.user` (pipe), latin-1."""
    reader = _Reader(root, sample_rows)
    ratings = reader.ratings("u.data", dataclasses.replace(_ML100K, sep="\t"), names=RATING_COLUMNS)
    genres = _ml100k_genre_names(reader)
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    loaded = reader.table("u.item", "items", _ML100K, names=item_columns)
    if loaded is not None:
        loaded = _ml100k_items(reader, *loaded, genres)
    items = reader.normalized(normalize_items, "u.item", loaded)
    user_columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = reader.normalized(
        normalize_users,
        "u.user",
        reader.table("u.user", "users", _ML100K, names=user_columns, required=False),
    )
    return reader.snapshot(
        "ml-100k",
        ratings,
        items,
        users,
        (1.0, 5.0),
        {"interactions": "u.data", "items": "u.item", "users": "u.user"},
    )


def read_ml1m(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens 1M: `ratings.dat`, `movies.dat`, `users.dat` ("::"-separated, latin-1)."""
    reader = _Reader(root, sample_rows)
    ratings = reader.ratings("ratings.dat", _ML1M, names=RATING_COLUMNS)
    items = reader.movies("movies.dat", _ML1M, names=["item_id", "title", "genres"])
    user_columns = ["user_id", "gender", "age", "occupation", "zip_code"]
    users = reader.normalized(
        normalize_users,
        "users.dat",
        reader.table("users.dat", "users", _ML1M, names=user_columns, required=False),
    )
    return reader.snapshot(
        "ml-1m",
        ratings,
        items,
        users,
        (1.0, 5.0),
        {"interactions": "ratings.dat", "items": "movies.dat", "users": "users.dat"},
    )


def read_ml_latest(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens latest / latest-small / 20M / 25M: `ratings.csv`, `movies.csv` (UTF-8, quoted)."""
    reader = _Reader(root, sample_rows)
    ratings = reader.ratings("ratings.csv", _LATEST)
    items = reader.movies("movies.csv", _LATEST)
    return reader.snapshot(
        "ml-latest",
        ratings,
        items,
        None,
        (0.5, 5.0),
        {"interactions": "ratings.csv", "items": "movies.csv"},
    )


def _ml100k_items(reader: _Reader, frame: pd.DataFrame, lines: np.ndarray, genres):
    """u.item's genre flags joined into `genres`, its release date parsed into `created_at`."""
    flags = frame[list(genres)]
    valid = flags.isin(["0", "1"]).to_numpy().all(axis=1)
    if not valid.all():
        bad = np.flatnonzero(~valid)
        reader.issue(
            "items",
            "u.item",
            f"genre flags (the last {len(genres)} fields) must be 0 or 1",
            len(bad),
            [
                f"line {lines[i]}: {'|'.join(flags.iloc[i].fillna('').astype(str))!r}"
                for i in bad[: reader.sample_rows]
            ],
            column="genres",
        )
    names = np.asarray(genres, dtype=object)
    frame["genres"] = [GENRE_SEPARATOR.join(names[row]) for row in flags.to_numpy() == "1"]
    released = frame["release_date"]
    frame["created_at"] = pd.to_datetime(released, format="%d-%b-%Y", utc=True, errors="coerce")
    unparsed = np.flatnonzero((released.notna() & frame["created_at"].isna()).to_numpy())
    if len(unparsed):  # an empty date is allowed (the real file has one); a wrong one is not
        reader.issue(
            "items",
            "u.item",
            "release dates must be DD-Mon-YYYY (e.g. 01-Jan-1995) or empty",
            len(unparsed),
            [f"line {lines[i]}: {released.iloc[i]!r}" for i in unparsed[: reader.sample_rows]],
            column="created_at",
        )
        keep = np.ones(len(frame), dtype=bool)
        keep[unparsed] = False
        frame, lines = frame.loc[keep].reset_index(drop=True), lines[keep]
    return frame[["item_id", "title", "genres", "created_at", "imdb_url"]], lines


def _ml100k_genre_names(reader: _Reader) -> tuple[str, ...]:
    """Genre names in flag order from u.genre ("name|index" lines), or the release's own list.

    A malformed u.genre is reported and the release's list used, so u.item can still be read.
    """
    path = reader.root / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    pairs, bad = {}, []
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        reader.issue("items", "u.genre", f"the file must be readable ({exc.strerror or exc})")
        return ML100K_GENRES
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit() or "\x00" in line or int(index) in pairs:
            bad.append(f"line {number}: {line[:80]!r}")
            continue
        pairs[int(index)] = name
    if bad:
        reader.issue(
            "items",
            "u.genre",
            "u.genre lines must be name|index with a unique whole-number index",
            len(bad),
            bad[: reader.sample_rows],
        )
        return ML100K_GENRES
    if sorted(pairs) != list(range(len(pairs))) or not pairs:
        reader.issue(
            "items",
            "u.genre",
            "u.genre indexes must run 0, 1, 2, ... without gaps (one per genre flag in u.item)",
            1,
            [f"indexes found: {sorted(pairs)}"],
        )
        return ML100K_GENRES
    return tuple(pairs[k] for k in range(len(pairs)))
