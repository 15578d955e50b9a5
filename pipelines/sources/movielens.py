"""Readers for the MovieLens dumps, normalized to the contract.

Every rating is kept as an interaction: the rating becomes its `weight` and the event is
"rating". Ids become strings. Titles and genres become the item's content features; the
100K release date becomes `created_at`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contract import GENRE_SEPARATOR, RawSnapshot, ReadIssue, empty_partitions
from pipelines.sources.contract_files import concat_interactions
from pipelines.sources.normalize import normalize_interactions, normalize_items, normalize_users
from pipelines.sources.text import read_delimited

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

    def table(
        self,
        name: str,
        table: str,
        dialect: _Dialect,
        *,
        names=None,
        renames=None,
        required: bool = True,
    ):
        """(frame of strings, line numbers) of one file, or None when it is absent."""
        path = self.root / name
        if not path.is_file():
            if required:
                self.issues.append(
                    ReadIssue(
                        table=table,
                        file=str(path),
                        column=None,
                        count=1,
                        rule=f"file {name} is required for this format",
                    )
                )
            return None
        text = read_delimited(
            path,
            table=table,
            sep=dialect.sep,
            names=names,
            encoding=dialect.encoding,
            quoted=dialect.quoted,
            sample_rows=self.sample_rows,
        )
        self.issues.extend(text.issues)
        return text.frame.rename(columns=renames or {}), text.lines

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

    def ratings(self, name: str, dialect: _Dialect, *, names=None, renames=None):
        loaded = self.table(name, "interactions", dialect, names=names, renames=renames)
        return self.normalized(
            normalize_interactions, name, loaded, partition=None, default_event=RATING_EVENT
        )

    def movies(self, name: str, dialect: _Dialect, *, names=None, renames=None):
        """Items from a `movieId, title, genres` file ("(no genres listed)" becomes "")."""
        loaded = self.table(name, "items", dialect, names=names, renames=renames)
        if loaded is not None and "genres" in loaded[0]:
            genres = loaded[0]["genres"]
            loaded[0]["genres"] = genres.where(genres != NO_GENRES, "")
        return self.normalized(normalize_items, name, loaded)

    def snapshot(self, fmt, ratings, items, users, weight_range, table_files) -> RawSnapshot:
        return RawSnapshot(
            format=fmt,
            root=str(self.root),
            interactions=concat_interactions([ratings] if ratings is not None else []),
            items=items,
            users=users,
            partitions=empty_partitions(),
            issues=self.issues,
            weight_range=weight_range,
            table_files={t: str(self.root / name) for t, name in table_files.items()},
        )


def read_ml100k(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens 100K: `u.data` (tab), `u.item` and `u.user` (pipe), latin-1."""
    reader = _Reader(root, sample_rows)
    ratings = reader.ratings("u.data", dataclasses.replace(_ML100K, sep="\t"), names=RATING_COLUMNS)
    genres = _ml100k_genre_names(root / "u.genre")
    item_columns = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    loaded = reader.table("u.item", "items", _ML100K, names=item_columns)
    if loaded is not None:
        frame, lines = loaded
        flags = frame[list(genres)].fillna("0").to_numpy() == "1"
        names = np.asarray(genres, dtype=object)
        frame["genres"] = [GENRE_SEPARATOR.join(names[row]) for row in flags]
        frame["created_at"] = pd.to_datetime(
            frame["release_date"], format="%d-%b-%Y", utc=True, errors="coerce"
        )
        loaded = frame[["item_id", "title", "genres", "created_at", "imdb_url"]], lines
    items = reader.normalized(normalize_items, "u.item", loaded)
    user_columns = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = reader.normalized(
        normalize_users,
        "u.user",
        reader.table("u.user", "users", _ML100K, names=user_columns, required=False),
    )
    return reader.snapshot(
        "ml-100k", ratings, items, users, (1.0, 5.0), {"items": "u.item", "users": "u.user"}
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
        "ml-1m", ratings, items, users, (1.0, 5.0), {"items": "movies.dat", "users": "users.dat"}
    )


def read_ml_latest(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens latest / latest-small / 20M / 25M: `ratings.csv`, `movies.csv` (UTF-8, quoted)."""
    reader = _Reader(root, sample_rows)
    renames = {"userId": "user_id", "movieId": "item_id", "rating": "weight"}
    ratings = reader.ratings("ratings.csv", _LATEST, renames=renames)
    items = reader.movies("movies.csv", _LATEST, renames={"movieId": "item_id"})
    return reader.snapshot("ml-latest", ratings, items, None, (0.5, 5.0), {"items": "movies.csv"})


def _ml100k_genre_names(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    lines = path.read_text(encoding="latin-1").splitlines()
    pairs = [line.rsplit("|", 1) for line in lines if "|" in line]
    return tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))
