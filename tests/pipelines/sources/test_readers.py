"""Real-format readers: the same logical data in every format normalizes to the same snapshot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.errors import SourceError
from pipelines.sources import detect_format, read_source

RATINGS = [  # user, movie, rating, epoch seconds: a 1-star rating and a repeated (3, 1) pair
    (1, 1, 5, 964982703),
    (1, 10, 1, 964982224),
    (2, 32, 3, 978300760),
    (3, 1, 4, 881250949),
    (3, 1, 2, 881251000),
]
MOVIES = [  # id, title, genres, 100K release date
    (1, "Toy Story (1995)", ["Animation", "Children's", "Comedy"], "01-Jan-1995"),
    (10, "Misérables, Les (1995)", ["Drama", "Musical"], "20-Oct-1995"),
    (32, "American President, The (1995)", [], ""),
]
ML100K_USERS = [
    (1, 24, "M", "technician", "85711"),
    (2, 53, "F", "other", "02139"),
    (3, 23, "M", "writer", "32067"),
]
ML1M_USERS = [(1, "F", 1, 10, "48067"), (2, "M", 56, 16, "70072"), (3, "M", 25, 15, "02460")]
GENRES_100K = [
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
]
FORMATS = ["ml-100k", "ml-1m", "ml-latest", "contract-parquet", "contract-csv", "contract-flat-csv"]


def _lines(path: Path, rows: list[str], encoding: str = "utf-8", header: str | None = None):
    """Write `rows` (plus header) with "\\n" endings; return (file, 1-based line) of each row."""
    path.write_bytes(
        "".join(f"{r}\n" for r in [*([header] if header else []), *rows]).encode(encoding)
    )
    first = 2 if header else 1
    return [(str(path), first + k) for k in range(len(rows))]


def write_ml100k(root: Path, genre_file: list[str] | None = None):
    locs = _lines(root / "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS])
    _lines(
        root / "u.item",
        [
            f"{m}|{title}|{released}||http://us.imdb.com/M/title-exact?{m}|"
            + "|".join("1" if g in genres else "0" for g in GENRES_100K)
            for m, title, genres, released in MOVIES
        ],
        encoding="latin-1",
    )
    _lines(root / "u.user", ["|".join(map(str, u)) for u in ML100K_USERS])
    if genre_file is not None:  # like the real u.genre: name|index lines, then a blank line
        (root / "u.genre").write_bytes(
            ("".join(f"{n}|{k}\n" for k, n in enumerate(genre_file)) + "\n").encode("latin-1")
        )
    return locs


def write_ml1m(root: Path, ratings: list[str] | None = None):
    rows = ratings if ratings is not None else ["::".join(map(str, r)) for r in RATINGS]
    locs = _lines(root / "ratings.dat", rows)
    _lines(
        root / "movies.dat",
        [f"{m}::{title}::{'|'.join(g) or '(no genres listed)'}" for m, title, g, _ in MOVIES],
        encoding="latin-1",
    )
    _lines(root / "users.dat", ["::".join(map(str, u)) for u in ML1M_USERS])
    return locs


def write_ml_latest(root: Path, ratings=RATINGS):
    locs = _lines(
        root / "ratings.csv",
        [f"{u},{i},{r:.1f},{t}" for u, i, r, t in ratings],
        header="userId,movieId,rating,timestamp",
    )
    quote = lambda title: f'"{title}"' if "," in title else title  # noqa: E731 (as the real file does)
    _lines(
        root / "movies.csv",
        [f"{m},{quote(title)},{'|'.join(g) or '(no genres listed)'}" for m, title, g, _ in MOVIES],
        header="movieId,title,genres",
    )
    return locs


def write_contract(root: Path, layout: str):
    """layout: "parquet" / "csv" (interactions/dt=YYYY-MM-DD/part-0.*) or "flat-csv"."""
    frame = pd.DataFrame(RATINGS, columns=["user_id", "item_id", "weight", "epoch"])
    frame["weight"] = frame["weight"].astype(float)
    stamps = pd.to_datetime(frame["epoch"], unit="s", utc=True)
    locs: list = [None] * len(frame)
    if layout == "flat-csv":
        path = root / "interactions.csv"
        frame.rename(columns={"epoch": "timestamp"}).to_csv(path, index=False)
        locs = [(str(path), k + 2) for k in range(len(frame))]
    else:
        frame["timestamp"] = stamps if layout == "parquet" else stamps.map(lambda t: t.isoformat())
        frame = frame.drop(columns="epoch")
        for day, part in frame.groupby(stamps.dt.strftime("%Y-%m-%d")):
            path = root / "interactions" / f"dt={day}" / f"part-0.{layout}"
            path.parent.mkdir(parents=True)
            if layout == "parquet":
                part.to_parquet(path, index=False)
            else:
                part.to_csv(path, index=False)
            for pos, k in enumerate(part.index):  # Parquet rows are 0-based, CSV lines 1-based
                locs[k] = (str(path), pos if layout == "parquet" else pos + 2)
    items = pd.DataFrame(
        {
            "item_id": [m[0] for m in MOVIES],
            "title": [m[1] for m in MOVIES],
            "genres": [list(m[2]) for m in MOVIES],
        }
    )
    users = pd.DataFrame(
        {"user_id": [u[0] for u in ML1M_USERS], "gender": [u[1] for u in ML1M_USERS]}
    )
    if layout == "parquet":
        items.to_parquet(root / "items.parquet", index=False)
        users.to_parquet(root / "users.parquet", index=False)
    else:
        items.assign(genres=items["genres"].map("|".join)).to_csv(root / "items.csv", index=False)
        users.to_csv(root / "users.csv", index=False)
    return locs


def write(fmt: str, root: Path):
    root.mkdir(parents=True, exist_ok=True)
    if fmt.startswith("contract-"):
        return write_contract(root, fmt.removeprefix("contract-"))
    return {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "ml-latest": write_ml_latest}[fmt](root)


def key(frame: pd.DataFrame) -> list[tuple]:
    return sorted(
        zip(
            frame["user_id"],
            frame["item_id"],
            frame["timestamp"].map(lambda t: int(t.timestamp())),
            frame["weight"],
            strict=False,
        )
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_ratings_normalize_identically_in_every_format(tmp_path, fmt):
    write(fmt, tmp_path / fmt)
    snap = read_source(tmp_path / fmt)
    assert snap.format == ("contract" if fmt.startswith("contract") else fmt)
    inter = snap.interactions
    assert list(inter.columns[:5]) == ["user_id", "item_id", "timestamp", "event", "weight"]
    assert pd.api.types.is_string_dtype(inter["user_id"]) and pd.api.types.is_string_dtype(
        inter["item_id"]
    )
    assert all(type(v) is str for v in [*inter["user_id"], *inter["item_id"]])
    assert (
        isinstance(inter["timestamp"].dtype, pd.DatetimeTZDtype)
        and str(inter["timestamp"].dt.tz) == "UTC"
    )
    assert inter["weight"].dtype == "float64"
    # Every rating kept (1-star and the repeated pair too), exact ids, epochs and weights.
    assert key(inter) == sorted((str(u), str(i), t, float(r)) for u, i, r, t in RATINGS)
    assert set(inter["event"]) == ({"interaction"} if fmt.startswith("contract") else {"rating"})
    assert snap.issues == []


def test_every_format_agrees_on_interactions(tmp_path):
    keys = {}
    for fmt in FORMATS:
        write(fmt, tmp_path / fmt)
        keys[fmt] = key(read_source(tmp_path / fmt).interactions)
    assert len(set(map(tuple, keys.values()))) == 1, keys


@pytest.mark.parametrize("fmt", FORMATS)
def test_source_file_and_row_point_at_each_rating(tmp_path, fmt):
    locs = write(fmt, tmp_path / fmt)
    inter = read_source(tmp_path / fmt).interactions
    got = {
        (u, i, int(t.timestamp())): (str(f), int(r))
        for u, i, t, f, r in zip(
            inter["user_id"],
            inter["item_id"],
            inter["timestamp"],
            inter["source_file"],
            inter["source_row"],
            strict=False,
        )
    }
    assert got == {
        (str(u), str(i), t): loc for (u, i, _, t), loc in zip(RATINGS, locs, strict=True)
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_items_titles_and_genres(tmp_path, fmt):
    write(fmt, tmp_path / fmt)
    items = read_source(tmp_path / fmt).items
    got = sorted(zip(items["item_id"], items["title"], items["genres"], strict=False))
    # Latin-1 "é" decoded, the quoted comma kept in the title, "(no genres listed)" -> "".
    assert got == [
        ("1", "Toy Story (1995)", "Animation|Children's|Comedy"),
        ("10", "Misérables, Les (1995)", "Drama|Musical"),
        ("32", "American President, The (1995)", ""),
    ]


def test_ml100k_release_date_and_genre_file(tmp_path):
    names = [
        ("Children" if g == "Children's" else g.lower() if g == "Drama" else g) for g in GENRES_100K
    ]
    write_ml100k(tmp_path, genre_file=names)
    items = read_source(tmp_path, "ml-100k").items.set_index("item_id")
    assert items.loc["1", "created_at"] == pd.Timestamp("1995-01-01", tz="UTC")
    assert items.loc["10", "created_at"] == pd.Timestamp("1995-10-20", tz="UTC")
    assert pd.isna(items.loc["32", "created_at"])
    assert items.loc["1", "genres"] == "Animation|Children|Comedy"  # u.genre's names win
    assert items.loc["10", "genres"] == "drama|Musical"
    assert items.loc["10", "title"] == "Misérables, Les (1995)"


@pytest.mark.parametrize(
    "fmt, columns, rows",
    [
        ("ml-100k", ["user_id", "age", "gender", "occupation", "zip_code"], ML100K_USERS),
        ("ml-1m", ["user_id", "gender", "age", "occupation", "zip_code"], ML1M_USERS),
    ],
)
def test_users_features_are_strings(tmp_path, fmt, columns, rows):
    write(fmt, tmp_path)
    users = read_source(tmp_path).users
    assert users is not None and len(users) == 3
    for column in columns:
        assert all(type(v) is str for v in users[column]), column
    got = sorted(tuple(r) for r in users[columns].itertuples(index=False))
    assert got == sorted(tuple(map(str, r)) for r in rows)  # zip "02139" keeps its leading zero


def test_ml_latest_has_no_users(tmp_path):
    write_ml_latest(tmp_path)
    assert read_source(tmp_path).users is None


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("ml-100k", "ml-100k"),
        ("ml-1m", "ml-1m"),
        ("ml-latest", "ml-latest"),
        ("contract-parquet", "contract"),
        ("contract-csv", "contract"),
        ("contract-flat-csv", "contract"),
    ],
)
def test_detect_format(tmp_path, fmt, expected):
    write(fmt, tmp_path)
    assert detect_format(tmp_path) == expected


def test_detect_format_on_empty_dir_lists_markers(tmp_path):
    with pytest.raises(SourceError) as err:
        detect_format(tmp_path)
    for marker in ("u.data", "ratings.dat", "ratings.csv", "interactions"):
        assert marker in str(err.value)
    with pytest.raises(SourceError, match="cannot detect"):
        read_source(tmp_path)


def test_unknown_format_and_missing_dir(tmp_path):
    write_ml1m(tmp_path)
    with pytest.raises(SourceError, match="nope"):
        read_source(tmp_path, "nope")
    with pytest.raises(SourceError, match="does not exist"):
        read_source(tmp_path / "absent", "ml-1m")


def malformed_ml1m(root: Path):
    lines = ["::".join(map(str, r)) for r in RATINGS]
    lines.insert(2, "2::32::3")  # line 3: the timestamp field is missing
    write_ml1m(root, ratings=lines)
    return read_source(root)


def test_malformed_ratings_dat_line_is_reported_and_skipped(tmp_path):
    snap = malformed_ml1m(tmp_path)
    assert key(snap.interactions) == sorted((str(u), str(i), t, float(r)) for u, i, r, t in RATINGS)
    assert sorted(snap.interactions["source_row"]) == [1, 2, 4, 5, 6]
    [issue] = snap.issues
    assert issue.file == str(tmp_path / "ratings.dat") and issue.table == "interactions"
    assert "fields" in issue.rule and "4" in issue.rule and issue.count == 1
    assert len(issue.samples) == 1 and issue.samples[0].startswith("line 3:")


def test_malformed_line_sample_quotes_the_line_as_written(tmp_path):
    [issue] = malformed_ml1m(tmp_path).issues
    assert issue.samples == ("line 3: expected 4 fields, saw 3: '2::32::3'",)
    assert "'::'-separated" in issue.rule


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("ml-100k", (1.0, 5.0)),
        ("ml-1m", (1.0, 5.0)),
        ("ml-latest", (0.5, 5.0)),
        ("contract-csv", None),
    ],
)
def test_weight_range(tmp_path, fmt, expected):
    write(fmt, tmp_path)
    assert read_source(tmp_path).weight_range == expected


def test_ml_latest_half_star_ratings_kept(tmp_path):
    extra = [(2, 10, 3.5, 1000000000), (2, 1, 0.5, 1000000001)]
    write_ml_latest(tmp_path, ratings=RATINGS + extra)
    inter = read_source(tmp_path).interactions
    assert len(inter) == 7
    assert key(inter) == sorted((str(u), str(i), t, float(r)) for u, i, r, t in RATINGS + extra)


# -- issue 13: silent acceptance and tracebacks (each case named after the input) ------------


def only_issue(snap, fragment: str):
    matches = [i for i in snap.issues if fragment in i.rule]
    assert matches, f"no issue about {fragment!r}: {[i.rule for i in snap.issues]}"
    return matches[0]


@pytest.mark.parametrize(
    "header", ["userId,movieId,rating ,timestamp", " USERID,MovieId,Rating,Timestamp "]
)
def test_rating_header_with_spaces_or_case_keeps_the_ratings(tmp_path, header):
    write_ml_latest(tmp_path)
    path = tmp_path / "ratings.csv"
    path.write_text(path.read_text().replace("userId,movieId,rating,timestamp", header))
    snap = read_source(tmp_path)
    assert snap.issues == []
    assert key(snap.interactions) == sorted((str(u), str(i), t, float(r)) for u, i, r, t in RATINGS)


def test_contract_header_weight_event_with_spaces_and_created_at_case(tmp_path):
    write_contract(tmp_path, "flat-csv")
    path = tmp_path / "interactions.csv"
    frame = pd.read_csv(path).assign(event="buy")
    frame.rename(columns={"weight": "weight ", "event": " Event"}).to_csv(path, index=False)
    items = pd.read_csv(tmp_path / "items.csv").assign(Created_At="1990-01-01T00:00:00Z")
    items.to_csv(tmp_path / "items.csv", index=False)
    snap = read_source(tmp_path)
    assert snap.issues == []
    assert sorted(snap.interactions["weight"]) == sorted(float(r[2]) for r in RATINGS)
    assert set(snap.interactions["event"]) == {"buy"}
    assert (snap.items["created_at"] == pd.Timestamp("1990-01-01", tz="UTC")).all()


def test_header_names_that_clash_after_normalising_are_refused(tmp_path):
    write_ml_latest(tmp_path)
    path = tmp_path / "ratings.csv"
    path.write_text(path.read_text().replace("timestamp\n", "Rating\n", 1))
    issue = only_issue(read_source(tmp_path), "column names must be unique")
    assert issue.file.endswith("ratings.csv") and "'rating'" in issue.rule


def test_empty_rating_field_is_refused_not_read_as_1(tmp_path):
    write_ml_latest(tmp_path)
    path = tmp_path / "ratings.csv"
    path.write_text(path.read_text().replace("1,10,1.0,", "1,10,,"))
    snap = read_source(tmp_path)
    issue = only_issue(snap, "weights must not be empty")
    assert issue.column == "weight" and issue.samples == ("line 3: (empty)",)
    assert 1.0 not in set(snap.interactions["weight"])  # the 1-star row was the one emptied


def test_missing_rating_column_is_refused_not_read_as_1(tmp_path):
    (tmp_path / "latest").mkdir()
    write_ml_latest(tmp_path / "latest")
    path = tmp_path / "latest" / "ratings.csv"
    path.write_text(path.read_text().replace("rating,", "stars,", 1))
    issue = only_issue(read_source(tmp_path / "latest"), "required column 'weight'")
    assert issue.column == "weight"


def test_nan_weight_in_parquet_is_refused(tmp_path):
    write_contract(tmp_path, "parquet")
    part = sorted((tmp_path / "interactions").rglob("*.parquet"))[0]
    frame = pd.read_parquet(part)
    frame.loc[0, "weight"] = float("nan")
    frame.to_parquet(part, index=False)
    issue = only_issue(read_source(tmp_path), "weights must not be empty, NaN")
    assert issue.file == str(part) and issue.samples == ("row 0: (empty)",)


def test_zero_byte_csv_partition_is_an_issue(tmp_path):
    write_contract(tmp_path, "csv")
    part = sorted((tmp_path / "interactions").rglob("*.csv"))[0]
    part.write_bytes(b"")
    issue = only_issue(read_source(tmp_path), "must not be empty")
    assert issue.file == str(part)


def test_empty_ratings_file_is_an_issue(tmp_path):
    write_ml_latest(tmp_path)
    (tmp_path / "ratings.csv").write_bytes(b"")
    snap = read_source(tmp_path)
    assert only_issue(snap, "must not be empty").file == str(tmp_path / "ratings.csv")
    assert len(snap.interactions) == 0


@pytest.mark.parametrize("fmt, name", [("ml-latest", "ratings.csv"), ("ml-1m", "ratings.dat")])
def test_cr_only_line_endings_are_an_issue(tmp_path, fmt, name):
    write(fmt, tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    issue = only_issue(read_source(tmp_path), "not \\r alone")
    assert issue.file == str(path) and issue.samples[0].startswith("line 1:")


def test_unbalanced_quote_is_an_issue_with_its_line(tmp_path):
    write_ml_latest(tmp_path)
    path = tmp_path / "ratings.csv"
    path.write_text(path.read_text().replace("2,32,", '2,"32,'))
    snap = read_source(tmp_path)
    issue = only_issue(snap, "quoted fields must be closed")
    assert issue.samples[0].startswith("line 4:") and issue.count == 3  # lines 4-6
    assert len(snap.interactions) == 2


def test_bad_u_genre_index_is_an_issue(tmp_path):
    write_ml100k(tmp_path, genre_file=GENRES_100K)
    (tmp_path / "u.genre").write_text("unknown|0\nAction|one\n")
    issue = only_issue(read_source(tmp_path), "u.genre lines must be name|index")
    assert issue.samples == ("line 2: 'Action|one'",)


@pytest.mark.parametrize(
    "fmt, name, line", [("ml-latest", "ratings.csv", 2), ("ml-1m", "ratings.dat", 1)]
)
def test_first_data_row_with_one_extra_field_reports_the_field_count(tmp_path, fmt, name, line):
    write(fmt, tmp_path)
    path = tmp_path / name
    path.write_bytes(
        path.read_bytes().replace(
            b"964982703", b"964982703" + (b"," if fmt == "ml-latest" else b"::") + b"7", 1
        )
    )
    snap = read_source(tmp_path)
    [issue] = snap.issues
    assert "every line must have 4" in issue.rule
    assert issue.samples[0].startswith(f"line {line}: expected 4 fields, saw 5")
    assert len(snap.interactions) == 4 and set(snap.interactions["weight"]) <= {1.0, 2.0, 3.0, 4.0}


@pytest.mark.parametrize("fmt, name", [("ml-latest", "ratings.csv"), ("ml-100k", "u.data")])
def test_nul_bytes_are_an_issue(tmp_path, fmt, name):
    write(fmt, tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes().replace(b"978300760", b"97830\x000760"))
    snap = read_source(tmp_path)
    issue = only_issue(snap, "NUL bytes")
    assert issue.count == 1 and len(snap.interactions) == 4


def test_unreadable_day_partition_is_carried_in_the_snapshot(tmp_path):
    write_contract(tmp_path, "parquet")
    part = sorted((tmp_path / "interactions").rglob("*.parquet"))[-1]
    part.write_bytes(part.read_bytes()[:40])
    snap = read_source(tmp_path)
    issue = only_issue(snap, "readable Parquet")
    assert issue.file == str(part)
    day = part.parent.name.removeprefix("dt=")
    assert snap.partitions.set_index("dt").loc[day, "rows"] == 0


def test_unsupported_file_in_a_partition_is_an_issue(tmp_path):
    write_contract(tmp_path, "csv")
    part = sorted((tmp_path / "interactions").rglob("*.csv"))[0]
    extra = part.with_name("part-1.jsonl")
    extra.write_text('{"user_id": "1"}\n')
    (part.parent / "_SUCCESS").write_text("")  # Spark markers stay ignored
    assert only_issue(read_source(tmp_path), "*.parquet or *.csv").file == str(extra)


def test_small_blocks_read_the_same_rows_and_lines(tmp_path):
    """Block boundaries (even inside a quoted multi-line title) change nothing."""
    from pipelines.sources.text import read_delimited

    path = tmp_path / "movies.csv"
    rows = [
        f'{k},"Title {k}{chr(10) + "part two" if k % 7 == 0 else ""}",Drama' for k in range(300)
    ]
    path.write_text("movieId,title,genres\n" + "\n".join(rows) + "\n")
    whole = read_delimited(path, table="items", sep=",")
    small = read_delimited(path, table="items", sep=",", block_bytes=64)
    assert whole.issues == small.issues == []
    pd.testing.assert_frame_equal(whole.frame, small.frame)
    assert list(whole.lines) == list(small.lines)
    # Titles 0 and 7 take two lines each: row 8 is on line 12.
    assert whole.lines[8] == 12 and whole.frame.loc[7, "title"] == "Title 7\npart two"


@pytest.mark.slow
def test_large_ratings_csv_is_read_in_bounded_memory(tmp_path):
    """A ~200 MB ratings.csv: peak RSS stays under 3x the file plus a fixed baseline."""
    import subprocess
    import sys
    import textwrap

    import numpy as np

    root = tmp_path / "big"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "ratings.csv", "w") as out:
        out.write("userId,movieId,rating,timestamp\n")
        for _ in range(15):
            n = 500_000
            block = np.column_stack([
                np.sort(rng.integers(1, 160_000, n)), rng.integers(1, 200_000, n),
                rng.integers(1, 11, n), rng.integers(820_000_000, 1_600_000_000, n),
            ])  # fmt: skip
            out.write("".join(f"{u},{m},{r / 2:.1f},{t}\n" for u, m, r, t in block.tolist()))
    (root / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    size = (root / "ratings.csv").stat().st_size
    assert size > 150e6
    script = textwrap.dedent(f"""
        import resource, sys
        from pipelines.sources import read_source
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
        base = rss()
        snap = read_source({str(root)!r}, "ml-latest")
        # VmHWM: this process's own peak. ru_maxrss is not: Linux carries the forking
        # parent's high-water mark into it across exec (a big pytest process inflates it).
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak = int(status.split()[0]) * 1024
        print(base, peak, len(snap.interactions), len(snap.issues))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    base, peak, rows, issues = map(int, done.stdout.split())
    assert rows == 7_500_000 and issues == 0
    working_set = 256e6  # fixed: a few 4 MB blocks as they are parsed, whatever the file size
    assert peak < base + working_set + 3 * size, (
        f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB file (baseline {base / 1e6:.0f} MB): "
        f"{(peak - base) / size:.2f}x"
    )


def test_loose_file_beside_the_partitions_is_an_issue(tmp_path):
    """A file dropped straight into interactions/ (not into a dt= day) would be skipped."""
    write_contract(tmp_path, "csv")
    loose = tmp_path / "interactions" / "late-events.csv"
    loose.write_text("user_id,item_id,timestamp\nu1,i1,2026-03-01T00:00:00Z\n")
    (tmp_path / "interactions" / "_SUCCESS").write_text("")  # markers stay ignored
    assert only_issue(read_source(tmp_path), "only dt=YYYY-MM-DD").file == str(loose)
