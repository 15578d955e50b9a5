"""Readers for the MovieLens dumps, normalized to the contract.

Every rating is kept as an interaction: the rating becomes its `weight` and the event is
"rating". Ids become strings. Titles and genres become the item's content features; the
100K release date becomes `created_at`.
"""

from __future__ import annotations

from pathlib import Path

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


def read_ml100k(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens 100K: `u.data` (tab), `u.item` and `u.user` (pipe), latin-1."""
    issues: list[ReadIssue] = []
    ratings = _interactions(
        root / "u.data",
        "\t",
        ["user_id", "item_id", "weight", "timestamp"],
        "latin-1",
        False,
        issues,
        sample_rows,
    )
    genres = _ml100k_genre_names(root / "u.genre")
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    items = None
    if (root / "u.item").is_file():
        text = read_delimited(
            root / "u.item",
            table="items",
            sep="|",
            names=item_cols,
            encoding="latin-1",
            quoted=False,
            sample_rows=sample_rows,
        )
        issues.extend(text.issues)
        frame = text.frame
        flags = frame[list(genres)].fillna("0") == "1"
        frame["genres"] = (
            flags.apply(
                lambda row: GENRE_SEPARATOR.join(
                    g for g, on in zip(genres, row, strict=True) if on
                ),
                axis=1,
            )
            if len(frame)
            else pd.Series([], dtype=str)
        )
        frame["created_at"] = pd.to_datetime(
            frame["release_date"], format="%d-%b-%Y", utc=True, errors="coerce"
        )
        frame = frame[["item_id", "title", "genres", "created_at", "imdb_url"]]
        items = normalize_items(
            frame,
            file=str(root / "u.item"),
            rows=text.lines,
            row_label="line",
            issues=issues,
            sample_rows=sample_rows,
        )
    else:
        _missing(root / "u.item", "items", issues)
    users = _users(
        root / "u.user",
        "|",
        ["user_id", "age", "gender", "occupation", "zip_code"],
        issues,
        sample_rows,
    )
    return _snapshot(
        "ml-100k",
        root,
        ratings,
        items,
        users,
        issues,
        (1.0, 5.0),
        {"items": root / "u.item", "users": root / "u.user"},
    )


def read_ml1m(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens 1M: `ratings.dat`, `movies.dat`, `users.dat` ("::"-separated, latin-1)."""
    issues: list[ReadIssue] = []
    ratings = _interactions(
        root / "ratings.dat",
        "::",
        ["user_id", "item_id", "weight", "timestamp"],
        "latin-1",
        False,
        issues,
        sample_rows,
    )
    items = _items(
        root / "movies.dat",
        "::",
        ["item_id", "title", "genres"],
        "latin-1",
        False,
        issues,
        sample_rows,
    )
    users = _users(
        root / "users.dat",
        "::",
        ["user_id", "gender", "age", "occupation", "zip_code"],
        issues,
        sample_rows,
    )
    return _snapshot(
        "ml-1m",
        root,
        ratings,
        items,
        users,
        issues,
        (1.0, 5.0),
        {"items": root / "movies.dat", "users": root / "users.dat"},
    )


def read_ml_latest(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """MovieLens latest / latest-small / 20M / 25M: `ratings.csv`, `movies.csv` (UTF-8, quoted)."""
    issues: list[ReadIssue] = []
    renames = {"userId": "user_id", "movieId": "item_id", "rating": "weight"}
    ratings = _interactions(
        root / "ratings.csv", ",", None, "utf-8", True, issues, sample_rows, renames=renames
    )
    items = _items(
        root / "movies.csv",
        ",",
        None,
        "utf-8",
        True,
        issues,
        sample_rows,
        renames={"movieId": "item_id"},
    )
    return _snapshot(
        "ml-latest", root, ratings, items, None, issues, (0.5, 5.0), {"items": root / "movies.csv"}
    )


def _interactions(path, sep, names, encoding, quoted, issues, sample_rows, renames=None):
    if not path.is_file():
        _missing(path, "interactions", issues)
        return None
    text = read_delimited(
        path,
        table="interactions",
        sep=sep,
        names=names,
        encoding=encoding,
        quoted=quoted,
        sample_rows=sample_rows,
    )
    issues.extend(text.issues)
    frame = text.frame.rename(columns=renames or {})
    return normalize_interactions(
        frame,
        file=str(path),
        rows=text.lines,
        row_label="line",
        partition=None,
        default_event=RATING_EVENT,
        issues=issues,
        sample_rows=sample_rows,
    )


def _items(path, sep, names, encoding, quoted, issues, sample_rows, renames=None):
    if not path.is_file():
        _missing(path, "items", issues)
        return None
    text = read_delimited(
        path,
        table="items",
        sep=sep,
        names=names,
        encoding=encoding,
        quoted=quoted,
        sample_rows=sample_rows,
    )
    issues.extend(text.issues)
    frame = text.frame.rename(columns=renames or {})
    if "genres" in frame:
        frame["genres"] = frame["genres"].where(frame["genres"] != NO_GENRES, "")
    return normalize_items(
        frame,
        file=str(path),
        rows=text.lines,
        row_label="line",
        issues=issues,
        sample_rows=sample_rows,
    )


def _users(path, sep, names, issues, sample_rows):
    if not path.is_file():
        return None  # users are optional in every format
    text = read_delimited(
        path,
        table="users",
        sep=sep,
        names=names,
        encoding="latin-1",
        quoted=False,
        sample_rows=sample_rows,
    )
    issues.extend(text.issues)
    return normalize_users(
        text.frame,
        file=str(path),
        rows=text.lines,
        row_label="line",
        issues=issues,
        sample_rows=sample_rows,
    )


def _ml100k_genre_names(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    pairs = [
        line.rsplit("|", 1)
        for line in path.read_text(encoding="latin-1").splitlines()
        if "|" in line
    ]
    return tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))


def _missing(path: Path, table: str, issues: list[ReadIssue]) -> None:
    issues.append(
        ReadIssue(
            table=table,
            file=str(path),
            column=None,
            rule=f"file {path.name} is required for this format",
            count=1,
        )
    )


def _snapshot(fmt, root, ratings, items, users, issues, weight_range, table_files) -> RawSnapshot:
    return RawSnapshot(
        format=fmt,
        root=str(root),
        interactions=concat_interactions([ratings] if ratings is not None else []),
        items=items,
        users=users,
        partitions=empty_partitions(),
        issues=issues,
        weight_range=weight_range,
        table_files={table: str(path) for table, path in table_files.items()},
    )
