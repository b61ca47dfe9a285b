"""trainer.data: every format on tiny handwritten files, malformed input, holdouts, real data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.data import (
    DataError,
    Dataset,
    holdout_split,
    load_dataset,
    read_interactions_table,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pairs(users: np.ndarray, items: np.ndarray) -> list[tuple[int, int]]:
    return list(zip(users.tolist(), items.tolist(), strict=True))


def named_pairs(ds: Dataset, split: str) -> set[tuple[str, str]]:
    users, items = getattr(ds, f"{split}_users"), getattr(ds, f"{split}_items")
    return {(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(users, items, strict=True)}


# ----------------------------------------------------------------------------- LightGCN


def test_lightgcn_dir_exact_arrays(tmp_path: Path) -> None:
    # user 2 appears with no items (declared only); user 0 lists item 2 twice; user 3 is
    # split over two lines; a blank line and CRLF endings are tolerated.
    write(tmp_path / "train.txt", "0 1 2 2\r\n1 2\n\n2\n3 0\n3 4\n")
    write(tmp_path / "test.txt", "0 3\n1 0 4\n2\n5\n")  # user 5: only in test, no items
    ds = load_dataset(tmp_path)
    assert ds.name == tmp_path.name
    assert ds.user_ids.tolist() == ["0", "1", "2", "3", "4", "5"]  # max user id 5 -> 6 rows
    assert ds.item_ids.tolist() == ["0", "1", "2", "3", "4"]
    assert pairs(ds.train_users, ds.train_items) == [(0, 1), (0, 2), (1, 2), (3, 0), (3, 4)]
    assert pairs(ds.test_users, ds.test_items) == [(0, 3), (1, 0), (1, 4)]
    assert (ds.n_users, ds.n_items, ds.n_train) == (6, 5, 5)
    assert ds.train_users.dtype == np.int64 and ds.test_items.dtype == np.int64
    dense = np.zeros((6, 5), np.float32)
    dense[[0, 0, 1, 3, 3], [1, 2, 2, 0, 4]] = 1
    np.testing.assert_array_equal(ds.train_matrix().toarray(), dense)
    assert ds.train_matrix().dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.lists(st.integers(0, 60), max_size=8)),
        min_size=1,
        max_size=15,
    ),
    st.sampled_from([" ", "\t", "  "]),
)
def test_lightgcn_matches_plain_python_parser(tmp_path_factory, lines, sep) -> None:
    """The vectorised parser agrees with str.split + int() on random files."""
    if not any(items for _, items in lines):
        lines = [*lines, (0, [0])]
    d = tmp_path_factory.mktemp("lg")
    text = "\n".join(sep.join(str(t) for t in [u, *items]) for u, items in lines) + "\n"
    write(d / "train.txt", text)
    write(d / "test.txt", "0 0\n")
    ds = load_dataset(d)
    expected = sorted({(u, i) for u, items in lines for i in items})
    assert pairs(ds.train_users, ds.train_items) == expected
    assert ds.n_users == max(u for u, _ in lines) + 1
    assert ds.n_items == max([0] + [i for _, items in lines for i in items]) + 1


# ----------------------------------------------------------------------------- CSV pairs


def test_csv_pair_dir_exact_arrays(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "user,item\n0,3\n2,1\n0,3\n0,0\n")  # (0,3) twice
    write(tmp_path / "test.csv", "item,user\n4,2\n\n")  # columns swapped, trailing blank line
    ds = load_dataset(tmp_path)
    assert pairs(ds.train_users, ds.train_items) == [(0, 0), (0, 3), (2, 1)]
    assert pairs(ds.test_users, ds.test_items) == [(2, 4)]
    assert ds.user_ids.tolist() == ["0", "1", "2"]
    assert ds.item_ids.tolist() == ["0", "1", "2", "3", "4"]


def test_csv_pair_header_only_test_is_empty_split(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "user,item\n1,1\n")
    write(tmp_path / "test.csv", "user,item\n")
    ds = load_dataset(tmp_path)
    assert pairs(ds.train_users, ds.train_items) == [(1, 1)]
    assert ds.test_users.shape == (0,) and ds.test_matrix().nnz == 0


# ----------------------------------------------------------------------------- tables


def test_table_with_timestamps_latest_go_to_test(tmp_path: Path) -> None:
    # rows in file order; ids mapped by first appearance: bob=0, ann=1, cy=2; x=0, y=1, z=2, w=3
    text = (
        "user_id,item_id,timestamp\n"
        "bob,x,50\n"
        "ann,y,10\n"
        "bob,y,10\n"
        "bob,z,40\n"
        "ann,x,30\n"
        "bob,w,20\n"
        "cy,z,5\n"  # cy has a single interaction: stays in train
        "bob,x,5\n"  # duplicate (bob,x): the latest timestamp (50) is kept
        "ann,z,20\n"
        "ann,w,40\n"
        "ann,y,60\n"  # duplicate (ann,y): kept at 60, now ann's latest
    )
    ds = load_dataset(write(tmp_path / "events.csv", text), holdout=0.4)
    assert ds.name == "events"
    assert ds.user_ids.tolist() == ["bob", "ann", "cy"]
    assert ds.item_ids.tolist() == ["x", "y", "z", "w"]
    # bob: y@10 w@20 z@40 x@50 -> round(0.4*4)=2 latest (z, x) to test
    # ann: z@20 x@30 w@40 y@60 -> 2 latest (w, y) to test
    assert named_pairs(ds, "test") == {("bob", "z"), ("bob", "x"), ("ann", "w"), ("ann", "y")}
    assert named_pairs(ds, "train") == {("bob", "y"), ("bob", "w"), ("ann", "z"), ("ann", "x"),
                                        ("cy", "z")}  # fmt: skip
    assert pairs(ds.train_users, ds.train_items) == [(0, 1), (0, 3), (1, 0), (1, 2), (2, 2)]


def test_table_holdout_counts_per_user(tmp_path: Path) -> None:
    # user u has u+1 distinct items; 20 % holdout -> clip(round(0.2 c), 1, c - 1) if c >= 2
    rows = [f"u{u},i{i},{i}" for u in range(12) for i in range(u + 1)]
    ds = load_dataset(write(tmp_path / "t.csv", "user_id,item_id,timestamp\n" + "\n".join(rows)))
    n_test = np.bincount(ds.test_users, minlength=12)
    n_train = np.bincount(ds.train_users, minlength=12)
    c = np.arange(1, 13)
    expected = np.where(c >= 2, np.clip(np.floor(0.2 * c + 0.5), 1, c - 1), 0)
    np.testing.assert_array_equal(n_test, expected)
    np.testing.assert_array_equal(n_train + n_test, c)
    # timestamps are the item numbers: the test items are each user's highest-numbered ones
    for u, i in zip(ds.test_users, ds.test_items, strict=True):
        train_max = max(int(ds.item_ids[j][1:]) for j in ds.train_items[ds.train_users == u])
        assert int(ds.item_ids[i][1:]) > train_max


def test_tsv_without_timestamps_seeded_random_holdout(tmp_path: Path) -> None:
    rows = [f"user {u}\titem {(7 * u + k) % 23}" for u in range(30) for k in range(10)]
    path = write(tmp_path / "t.tsv", "user_id\titem_id\n" + "\n".join(rows) + "\n")
    a = load_dataset(path, seed=1)
    b = load_dataset(path, seed=1)
    c = load_dataset(path, seed=2)
    assert a.user_ids[0] == "user 0" and a.item_ids[1] == "item 1"  # spaces kept inside ids
    np.testing.assert_array_equal(a.test_items, b.test_items)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.test_items, c.test_items)
    np.testing.assert_array_equal(np.bincount(a.test_users, minlength=30), np.full(30, 2))
    assert named_pairs(a, "train") | named_pairs(a, "test") == {
        (f"user {u}", f"item {(7 * u + k) % 23}") for u in range(30) for k in range(10)
    }


def test_table_dir_quoted_fields_and_iso_timestamps(tmp_path: Path) -> None:
    write(
        tmp_path / "interactions.csv",
        'user_id,rating,item_id,timestamp\n"a,1",5,p,2024-01-02T00:00:00\n'
        '"a,1",3,q,2024-01-01\nb,1,p,2023-12-31\n',
    )
    users, items, ts = read_interactions_table(tmp_path)
    assert users.tolist() == ["a,1", "a,1", "b"] and items.tolist() == ["p", "q", "p"]
    np.testing.assert_array_equal(ts, [1704153600.0, 1704067200.0, 1703980800.0])
    ds = load_dataset(tmp_path, holdout=0.5)
    assert named_pairs(ds, "test") == {("a,1", "p")}  # the later of a,1's two interactions


def test_table_without_timestamp_column(tmp_path: Path) -> None:
    users, items, ts = read_interactions_table(write(tmp_path / "t.csv", "item_id,user_id\n1,2\n"))
    assert (users.tolist(), items.tolist(), ts) == (["2"], ["1"], None)


def test_holdout_zero_keeps_everything_in_train(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path / "t.csv", "user_id,item_id\na,x\na,y\na,z\n"), holdout=0.0)
    assert ds.n_train == 3 and ds.n_test == 0
    with pytest.raises(ValueError, match="holdout must be in"):
        load_dataset(tmp_path / "t.csv", holdout=1.0)


# ----------------------------------------------------------------------------- errors

MALFORMED = [
    # (files, file that is wrong, expected message fragment)
    ({"train.txt": "0 1 2\n1 x 3\n", "test.txt": "0 4\n"}, "train.txt",
     "line 2: non-integer id 'x'"),
    ({"train.txt": "0 1\n", "test.txt": "0 1\n\n2 -3\n"}, "test.txt", "line 3: negative id -3"),
    ({"train.txt": "0 1.5\n", "test.txt": "0 1\n"}, "train.txt", "line 1: non-integer id '1.5'"),
    ({"train.txt": "0 1\n1 99999999999\n", "test.txt": "0 1\n"}, "train.txt",
     "line 2: id 99999999999 exceeds 2147483647"),
    ({"train.txt": "0 1\n", "test.txt": "0 1,2\n"}, "test.txt", "line 1: non-integer id '1,2'"),
    ({"train.txt": "", "test.txt": "0 1\n"}, "train.txt", "file is empty"),
    ({"train.txt": "0\n1\n", "test.txt": "0 1\n"}, "train.txt", "no interactions"),
    ({"train.txt": "0 1\n"}, "test.txt", "missing (a LightGCN dataset needs"),
    ({"train.csv": "0,1\n1,2\n", "test.csv": "user,item\n"}, "train.csv",
     "line 1: missing header columns: expected 'user,item', got '0,1'"),
    ({"train.csv": "user,item\n0,1\n0,1,2\n", "test.csv": "user,item\n"}, "train.csv",
     "line 3: wrong column count: expected 2 (user,item), found 3"),
    ({"train.csv": "user,item\n0,1\n\n4\n", "test.csv": "user,item\n"}, "train.csv",
     "line 4: wrong column count: expected 2 (user,item), found 1"),
    ({"train.csv": "user,item\n0,\n", "test.csv": "user,item\n"}, "train.csv",
     "line 2: empty field"),
    ({"train.csv": "user,item\n0,1\n", "test.csv": "user,item\n3,a\n"}, "test.csv",
     "line 2: non-integer id 'a'"),
    ({"train.csv": "user,item\n", "test.csv": "user,item\n"}, "train.csv", "no interactions"),
    ({"interactions.csv": "user,item\na,b\n"}, "interactions.csv",
     "line 1: missing header columns ['user_id', 'item_id']"),
    ({"interactions.csv": "user_id,item_id\na,b\nc\n"}, "interactions.csv",
     "line 3: wrong column count: expected 2 (user_id,item_id), found 1"),
    ({"interactions.csv": "user_id,item_id,timestamp\na,b,1\n\nc,d,1,9\n"}, "interactions.csv",
     "line 4: wrong column count: expected 3 (user_id,item_id,timestamp), found 4"),
    ({"interactions.csv": "user_id,item_id\na,b\n ,d\n"}, "interactions.csv",
     "line 3: empty user_id"),
    ({"interactions.csv": "user_id,item_id,timestamp\na,b,1\nc,d,soon\n"}, "interactions.csv",
     "line 3: timestamp 'soon' is neither a number nor an ISO-8601 date/time"),
    ({"interactions.csv": "user_id,item_id,user_id\na,b,c\n"}, "interactions.csv",
     "line 1: duplicate header columns ['user_id']"),
    ({"interactions.csv": "user_id,item_id\n"}, "interactions.csv", "no interactions"),
    ({"interactions.csv": " \n\n"}, "interactions.csv", "file is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("files", "bad", "fragment"), MALFORMED)
def test_malformed_files_name_file_line_and_reason(tmp_path, files, bad, fragment) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / bad}: {fragment}")


def test_unknown_layouts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no dataset found: expected train.txt"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(write(tmp_path / "data.json", "{}"))
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        (tmp_path / "bin.csv").write_bytes(b"user_id,item_id\n\xff,a\n")
        load_dataset(tmp_path / "bin.csv")


# ----------------------------------------------------------------------------- Dataset, holdout


def small_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), rng.integers(1, 12, size=40))
    items = rng.integers(0, 25, size=len(users))
    ids = np.array([f"u{k}" for k in range(40)]), np.array([f"i{k}" for k in range(25)])
    return Dataset.from_pairs("small", *ids, (users, items), (np.array([3]), np.array([4])))


def test_from_pairs_dedupes_sorts_and_freezes() -> None:
    ds = Dataset.from_pairs(
        "x", np.array(["a", "b"]), np.array(["p", "q", "r"]), (np.array([1, 0, 1]), [2, 1, 2])
    )
    assert pairs(ds.train_users, ds.train_items) == [(0, 1), (1, 2)]
    assert ds.n_test == 0
    with pytest.raises(ValueError, match="read-only"):
        ds.train_items[0] = 5
    with pytest.raises(ValueError, match=r"train_items outside \[0, 3\)"):
        Dataset("x", ds.user_ids, ds.item_ids, np.array([0]), np.array([3]), ds.test_users,
                ds.test_items)  # fmt: skip


def test_fingerprint_depends_on_pairs_and_ids_not_name() -> None:
    ds = small_dataset()
    same = Dataset("other name", ds.user_ids, ds.item_ids, ds.train_users, ds.train_items,
                   ds.test_users, ds.test_items)  # fmt: skip
    assert ds.fingerprint() == same.fingerprint()
    assert len(ds.fingerprint()) == 64
    moved = Dataset("x", ds.user_ids, ds.item_ids, ds.train_users, ds.train_items,
                    ds.test_users, ds.test_items + 1)  # fmt: skip
    renamed = Dataset("x", ds.user_ids, np.char.add(ds.item_ids, "_"), ds.train_users,
                      ds.train_items, ds.test_users, ds.test_items)  # fmt: skip
    assert len({ds.fingerprint(), moved.fingerprint(), renamed.fingerprint()}) == 3


def test_holdout_split_deterministic_and_complete() -> None:
    ds = small_dataset()
    a, b, c = holdout_split(ds, 0.25, 7), holdout_split(ds, 0.25, 7), holdout_split(ds, 0.25, 8)
    np.testing.assert_array_equal(a.test_items, b.test_items)
    np.testing.assert_array_equal(a.train_users, b.train_users)
    assert not np.array_equal(a.test_items, c.test_items)
    assert a.name == "small:valid"
    assert a.user_ids is not None and (a.user_ids == ds.user_ids).all()
    original = set(pairs(ds.train_users, ds.train_items))
    kept, carved = set(pairs(a.train_users, a.train_items)), set(pairs(a.test_users, a.test_items))
    assert kept | carved == original and not kept & carved
    counts = np.bincount(ds.train_users, minlength=40)
    expected = np.where(counts >= 2, np.clip(np.floor(0.25 * counts + 0.5), 1, counts - 1), 0)
    np.testing.assert_array_equal(np.bincount(a.test_users, minlength=40), expected)
    assert (np.bincount(a.train_users, minlength=40) >= 1)[counts > 0].all()


# ----------------------------------------------------------------------------- real data


def test_real_citeulike_directspec_stats() -> None:
    folder = SHARED_DATA / "citeulike-directspec"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (the shared datasets sit beside the repo)")
    ds = load_dataset(folder)
    assert (ds.n_users, ds.n_items, ds.n_train) == (5_551, 16_980, 166_003)  # README stats
    with open(folder / "train.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert len(rows) == 166_025  # 22 duplicate rows removed by the loader
    assert set(pairs(ds.train_users, ds.train_items)) == {(int(u), int(i)) for u, i in rows}
    with open(folder / "test.csv", newline="") as f:
        test_rows = {(int(u), int(i)) for u, i in list(csv.reader(f))[1:]}
    assert set(pairs(ds.test_users, ds.test_items)) == test_rows
    assert len(test_rows & set(pairs(ds.train_users, ds.train_items))) == 11  # README: overlap
