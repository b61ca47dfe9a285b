"""Implicit-feedback datasets: loading, id maps and deterministic holdout splits (numpy + scipy).

Formats understood by :func:`load_dataset` (auto-detected):

* **LightGCN** directory with ``train.txt`` and ``test.txt``: one line per user,
  ``user item item ...``, whitespace separated, 0-based integer ids. A line holding only a user
  id declares that user (it gets a row) and adds no pairs; blank lines are ignored; a user on
  several lines gets the union of its items.
* **CSV pair** directory with ``train.csv`` and ``test.csv``: header ``user,item`` (either order),
  one interaction per row, 0-based integer ids (e.g. ``shared/data/citeulike-directspec``).
  A header-only ``test.csv`` means an empty test split.
* **Interactions table**: a ``.csv``/``.tsv`` file, or a directory holding ``interactions.csv``
  (or ``.tsv``), header ``user_id,item_id[,timestamp]`` (other columns are ignored), arbitrary
  string ids. Ids are mapped to contiguous rows **in order of first appearance** in the file,
  so ``user_0, user_1, ...`` written in that order get rows 0, 1, ... . A per-user holdout is
  cut deterministically (see :func:`load_dataset`).

For the integer formats ``user_ids``/``item_ids`` are ``str(row)`` and the number of rows is
``max id + 1`` over train and test (ids above ``2**31 - 1`` are refused). Test pairs are kept
as published, even where they also occur in train (CiteULike has 11 such pairs); evaluation
masks training items, so such a pair can never be a hit.

Pairs are deduplicated and stored sorted by (user row, item row). Malformed input raises
:class:`DataError` naming the file, the 1-based line number and the reason.

Parsing is vectorised: a whole file is read at once, validated with one regex pass, and the
integers are converted by numpy (no per-token Python loop): Gowalla's 810k training pairs
load in a fraction of a second.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, fields
from itertools import compress, repeat
from pathlib import Path

import numpy as np
import scipy.sparse as sp

MAX_ID = 2**31 - 1  # integer ids above this are refused (rows are int32 in artifacts)
_MAX_DIGITS = len(str(MAX_ID))
MAX_FIELD_CHARS = 512  # longest id / timestamp field accepted in an interactions table


class DataError(ValueError):
    """A dataset file that cannot be used; the message names the file, line and reason."""


def _error(path: Path, reason: str, line: int | None = None) -> DataError:
    where = f"{path}" if line is None else f"{path}: line {line}"
    return DataError(f"{where}: {reason}")


# ----------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users × items implicit feedback split into train and test pairs.

    ``user_ids`` (m,) / ``item_ids`` (n,) str: external id of each row. Pair arrays are int64
    row indices of equal length (``train_users``/``train_items`` (nnz_train,),
    ``test_users``/``test_items`` (nnz_test,), test may be empty). Arrays are made read-only.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "name":
                continue
            arr = np.asarray(getattr(self, f.name))
            if f.name.endswith("_ids"):
                arr = arr.astype(str)
            else:
                arr = arr.astype(np.int64, copy=False)
            if arr.ndim != 1:
                raise ValueError(f"Dataset.{f.name}: expected a 1-D array, got shape {arr.shape}")
            view = arr.view()
            view.flags.writeable = False
            object.__setattr__(self, f.name, view)
        m, n = len(self.user_ids), len(self.item_ids)
        for split in ("train", "test"):
            users, items = getattr(self, f"{split}_users"), getattr(self, f"{split}_items")
            if len(users) != len(items):
                raise ValueError(f"Dataset: {split}_users and {split}_items differ in length")
            if len(users) and (users.min() < 0 or users.max() >= m):
                raise ValueError(f"Dataset: {split}_users outside [0, {m})")
            if len(items) and (items.min() < 0 or items.max() >= n):
                raise ValueError(f"Dataset: {split}_items outside [0, {n})")

    @classmethod
    def from_pairs(
        cls,
        name: str,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Dataset:
        """Build a Dataset from (users, items) row arrays; duplicates removed, pairs sorted."""
        n = len(item_ids)
        empty = (np.empty(0, np.int64), np.empty(0, np.int64))
        tr_u, tr_i = _canonical_pairs(*train, n)
        te_u, te_i = _canonical_pairs(*(test if test is not None else empty), n)
        return cls(name, np.asarray(user_ids), np.asarray(item_ids), tr_u, tr_i, te_u, te_i)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_train(self) -> int:
        return len(self.train_users)

    @property
    def n_test(self) -> int:
        return len(self.test_users)

    def _matrix(self, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
        data = np.ones(len(users), dtype=np.float32)
        mat = sp.csr_matrix((data, (users, items)), shape=(self.n_users, self.n_items))
        mat.sum_duplicates()
        mat.data[:] = 1.0  # binary even if pairs were not deduplicated by the caller
        return mat

    def train_matrix(self) -> sp.csr_matrix:
        """Binary (m, n) float32 CSR of training interactions, column indices sorted."""
        return self._matrix(self.train_users, self.train_items)

    def test_matrix(self) -> sp.csr_matrix:
        """Binary (m, n) float32 CSR of test interactions, column indices sorted."""
        return self._matrix(self.test_users, self.test_items)

    def fingerprint(self) -> str:
        """sha256 hex of the id maps and the train and test pairs (the name is not included)."""
        h = hashlib.sha256(b"specrec-dataset-v1\0")
        for ids in (self.user_ids, self.item_ids):
            h.update(len(ids).to_bytes(8, "little"))
            h.update("\n".join(ids.tolist()).encode("utf-8"))
            h.update(b"\0")
        for arr in (self.train_users, self.train_items, self.test_users, self.test_items):
            h.update(len(arr).to_bytes(8, "little"))
            h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"train={self.n_train}, test={self.n_test})"
        )


def _canonical_pairs(
    users: np.ndarray, items: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique (user, item) pairs sorted by user then item, as int64 arrays."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n = max(n_items, 1)
    keys = np.sort(users * n + items)  # sort + diff: much faster than np.unique's hash path
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
    return keys // n, keys % n


# ----------------------------------------------------------------------------- reading files


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _error(path, f"cannot read file ({e.strerror or e})") from e
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        data = data[3:]
    if not data.strip():
        raise _error(path, "file is empty")
    return data


def _line_of(data: bytes, pos: int) -> int:
    """0-based line index of byte offset ``pos``."""
    return data.count(b"\n", 0, pos)


def _bad_token_reason(token: bytes) -> str:
    text = token.decode("utf-8", errors="replace")
    if re.fullmatch(rb"[+-]\d+", token) and token.startswith(b"-"):
        return f"negative id {text}"
    return f"non-integer id {text!r}"


_SEPARATORS = np.zeros(256, dtype=bool)
_SEPARATORS[[ord(c) for c in " \t\r\n\f\v,"]] = True


def _parse_int_tokens(
    data: bytes, path: Path, first_line: int, comma: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse non-negative integer tokens separated by whitespace (and commas if ``comma``).

    Returns ``values`` (t,) int64, ``token_line`` (t,) 0-based line index within ``data`` of
    each token, and the number of lines. ``first_line`` is the 1-based file line of ``data``'s
    first line (for messages).
    """
    allowed = rb"[^0-9 \t\r\n\f\v,]" if comma else rb"[^0-9 \t\r\n\f\v]"
    bad = re.search(allowed, data)
    if bad is not None:
        line = _line_of(data, bad.start())
        start = data.rfind(b"\n", 0, bad.start()) + 1
        end = data.find(b"\n", bad.start())
        text = data[start : end if end >= 0 else len(data)]
        splitter = rb"[\s,]+" if comma else rb"\s+"
        token = next(t for t in re.split(splitter, text) if re.search(allowed, t))
        raise _error(path, _bad_token_reason(token), first_line + line)

    buf = np.frombuffer(data, dtype=np.uint8)
    sep = _SEPARATORS[buf]  # commas only occur here when they are allowed
    prev_sep = np.empty_like(sep)
    prev_sep[0] = True
    prev_sep[1:] = sep[:-1]
    starts = np.flatnonzero(~sep & prev_sep)  # first byte of each token
    newlines = np.flatnonzero(buf == ord("\n"))
    token_line = np.searchsorted(newlines, starts)
    n_lines = len(newlines) + 1

    next_sep = np.empty_like(sep)
    next_sep[-1] = True
    next_sep[:-1] = sep[1:]
    ends = np.flatnonzero(~sep & next_sep)  # last byte of each token
    too_long = np.flatnonzero(ends - starts + 1 > _MAX_DIGITS)
    if len(too_long):
        t = too_long[0]
        token = data[starts[t] : ends[t] + 1].decode()
        raise _error(path, f"id {token} exceeds {MAX_ID}", first_line + int(token_line[t]))

    text = data.replace(b",", b" ") if comma else data
    values = np.fromstring(text, dtype=np.int64, sep=" ")  # text mode; digits only here
    if len(values) != len(starts):  # cannot happen after the checks above
        raise _error(path, f"parsed {len(values)} ids, expected {len(starts)}")
    over = np.flatnonzero(values > MAX_ID)
    if len(over):
        t = over[0]
        raise _error(path, f"id {values[t]} exceeds {MAX_ID}", first_line + int(token_line[t]))
    return values, token_line, n_lines


def read_lightgcn_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Read a LightGCN ``user item item ...`` file.

    Returns ``users`` (nnz,), ``items`` (nnz,) int64 (duplicates kept) and the largest user id
    seen (including users listed without items), or -1 if none.
    """
    path = Path(path)
    data = _read_bytes(path)
    values, token_line, _ = _parse_int_tokens(data, path, first_line=1, comma=False)
    first = np.empty(len(values), dtype=bool)  # first token of its line = the user id
    first[0] = True
    first[1:] = token_line[1:] != token_line[:-1]
    line_user = values[first]
    users = line_user[np.cumsum(first) - 1][~first]
    return users, values[~first], int(line_user.max())


def read_pair_csv(path: str | Path, allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``user,item`` CSV with integer ids; returns ``users``, ``items`` (nnz,) int64."""
    path = Path(path)
    data = _read_bytes(path)
    nl = data.find(b"\n")
    header_bytes = data if nl < 0 else data[:nl]
    header = [c.strip().lower() for c in header_bytes.decode("utf-8", "replace").split(",")]
    if sorted(header) != ["item", "user"]:
        shown = header_bytes.decode("utf-8", "replace").strip()
        raise _error(path, f"missing header columns: expected 'user,item', got {shown!r}", 1)
    body = b"" if nl < 0 else data[nl + 1 :]
    if not body.strip():
        if allow_empty:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        raise _error(path, "no interactions after the header")
    values, token_line, n_lines = _parse_int_tokens(body, path, first_line=2, comma=True)

    # every non-blank line must be exactly "<int> , <int>"
    buf = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    commas = np.flatnonzero(buf == ord(","))
    comma_line = np.searchsorted(newlines, commas)
    n_tokens = np.bincount(token_line, minlength=n_lines)
    n_commas = np.bincount(comma_line, minlength=n_lines)
    blank = (n_tokens == 0) & (n_commas == 0)
    bad = np.flatnonzero(~blank & ((n_commas != 1) | (n_tokens != 2)))
    if len(bad):
        line = int(bad[0])
        if n_commas[line] != 1:
            reason = f"wrong column count: expected 2 (user,item), found {n_commas[line] + 1}"
        elif n_tokens[line] < 2:
            reason = "empty field: expected 'user,item'"
        else:
            reason = f"expected one id per column, found {n_tokens[line]} ids"
        raise _error(path, reason, 2 + line)
    # the comma must sit between the two ids ("1 2," has the right counts but is wrong)
    tok_start = np.flatnonzero(~_SEPARATORS[buf] & np.r_[True, _SEPARATORS[buf][:-1]])
    first_tok, second_tok = tok_start[0::2], tok_start[1::2]
    misplaced = np.flatnonzero((commas < first_tok) | (commas > second_tok))
    if len(misplaced):
        line = int(comma_line[misplaced[0]])
        raise _error(path, "misplaced comma: expected 'user,item'", 2 + line)
    user_col = header.index("user")
    pairs = values.reshape(-1, 2)
    return pairs[:, user_col].copy(), pairs[:, 1 - user_col].copy()


def _parse_timestamps(col: np.ndarray, lines: np.ndarray, path: Path) -> np.ndarray:
    """Numeric timestamps, or ISO-8601 date/times (-> seconds since the epoch); float64."""
    try:
        return col.astype(np.float64)
    except ValueError:
        pass
    try:
        return col.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    except ValueError:
        pass
    for value, line in zip(col.tolist(), lines.tolist(), strict=True):  # slow path: find it
        try:
            float(value)
        except ValueError:
            try:
                np.datetime64(value, "s")
            except ValueError:
                raise _error(
                    path,
                    f"timestamp {value!r} is neither a number nor an ISO-8601 date/time",
                    int(line),
                ) from None
    raise _error(path, "mixed timestamp formats (numbers and dates)")


def read_interactions_table(
    path: str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a ``user_id,item_id[,timestamp]`` table (``.tsv``: tab separated; else comma).

    Returns ``user_ids`` (r,) str, ``item_ids`` (r,) str and ``timestamps`` (r,) float64
    (numbers as given, ISO-8601 strings as seconds since the epoch) or None without that column.
    One entry per data row, in file order, duplicates kept; blank lines are skipped; fields are
    stripped of surrounding whitespace; double-quoted fields follow the CSV rules.
    """
    path = Path(path)
    if path.is_dir():
        path = _table_in_dir(path) or path / "interactions.csv"
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(path, "not valid UTF-8 text", _line_of(data, e.start) + 1) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")

    if '"' in text:  # quoted fields: let the csv module handle the quoting rules
        reader = csv.reader(io.StringIO(text), delimiter=delim, strict=True)
        rows: list[list[str]] = []
        row_lines: list[int] = []
        try:
            for row in reader:
                rows.append(row)
                row_lines.append(reader.line_num)
        except csv.Error as e:
            raise _error(path, f"malformed CSV ({e})", reader.line_num) from None
        header, body_rows = rows[0], rows[1:]
        body_lines = row_lines[1:]
        keep = [any(f.strip() for f in r) for r in body_rows]
        body_rows = list(compress(body_rows, keep))
        lines = np.asarray(list(compress(body_lines, keep)), dtype=np.int64)
        n_fields = np.asarray([len(r) for r in body_rows], dtype=np.int64)
        flat = [f for r in body_rows for f in r]
    else:
        all_lines = text.split("\n")
        header = all_lines[0].split(delim)
        body = all_lines[1:]
        # map() over C methods: no Python bytecode per line
        length = np.fromiter(map(len, body), np.int64, len(body))
        nonblank = (length > 0) & ~np.fromiter(map(str.isspace, body), bool, len(body))
        body_lines = list(compress(body, nonblank.tolist()))
        lines = np.flatnonzero(nonblank) + 2
        n_fields = np.fromiter(map(str.count, body_lines, repeat(delim)), np.int64, len(lines))
        n_fields += 1
        flat = delim.join(body_lines).split(delim) if body_lines else []

    names = [h.strip().lower() for h in header]
    missing = [c for c in ("user_id", "item_id") if c not in names]
    if missing:
        raise _error(
            path,
            f"missing header columns {missing}: expected 'user_id{delim}item_id[{delim}timestamp]',"
            f" got {delim.join(header).strip()!r}",
            1,
        )
    dup = sorted({c for c in names if c and names.count(c) > 1})
    if dup:
        raise _error(path, f"duplicate header columns {dup}", 1)
    ncols = len(names)
    wrong = np.flatnonzero(n_fields != ncols)
    if len(wrong):
        w = wrong[0]
        raise _error(
            path,
            f"wrong column count: expected {ncols} ({delim.join(names)}), found {n_fields[w]}",
            int(lines[w]),
        )
    if len(lines) == 0:
        raise _error(path, "no interactions after the header")
    longest = max(map(len, flat))
    if longest > MAX_FIELD_CHARS:  # a fixed-width str array of such fields would be huge
        at = next(k for k, f in enumerate(flat) if len(f) > MAX_FIELD_CHARS) // ncols
        raise _error(path, f"field longer than {MAX_FIELD_CHARS} characters", int(lines[at]))
    table = np.char.strip(np.asarray(flat, dtype=str).reshape(-1, ncols))

    out = []
    for col_name in ("user_id", "item_id"):
        col = table[:, names.index(col_name)]
        empty = np.flatnonzero(np.char.str_len(col) == 0)
        if len(empty):
            raise _error(path, f"empty {col_name}", int(lines[empty[0]]))
        out.append(col)
    ts = None
    if "timestamp" in names:
        col = table[:, names.index("timestamp")]
        empty = np.flatnonzero(np.char.str_len(col) == 0)
        if len(empty):
            raise _error(path, "empty timestamp", int(lines[empty[0]]))
        ts = _parse_timestamps(col, lines, path)
        bad = np.flatnonzero(~np.isfinite(ts))
        if len(bad):
            raise _error(path, f"timestamp {col[bad[0]]!r} is not finite", int(lines[bad[0]]))
    return out[0], out[1], ts


def _table_in_dir(path: Path) -> Path | None:
    for name in ("interactions.csv", "interactions.tsv"):
        if (path / name).is_file():
            return path / name
    return None


# ----------------------------------------------------------------------------- id maps, splits


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map values to 0..u-1 in order of first appearance; returns (distinct values, codes)."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inverse.reshape(-1)]


def _holdout_mask(
    users: np.ndarray, n_users: int, fraction: float, sort_keys: tuple[np.ndarray, ...]
) -> np.ndarray:
    """Boolean mask (nnz,) of the pairs that go to the held-out side.

    Per user with c >= 2 pairs, ``clip(round(fraction * c), 1, c - 1)`` pairs go out (none
    when ``fraction == 0``): those that sort last by ``sort_keys`` (lexsort order, last key
    most significant after the user). Users with one pair keep it.
    """
    mask = np.zeros(len(users), dtype=bool)
    if fraction <= 0 or len(users) == 0:
        return mask
    counts = np.bincount(users, minlength=n_users)
    n_out = np.clip(np.floor(fraction * counts + 0.5), 1, np.maximum(counts - 1, 1))
    n_out = np.where(counts >= 2, n_out, 0).astype(np.int64)
    order = np.lexsort((*sort_keys, users))
    starts = np.cumsum(counts) - counts
    su = users[order]
    pos = np.arange(len(users)) - starts[su]  # position within the user's sorted pairs
    mask[order] = pos >= counts[su] - n_out[su]
    return mask


def _check_fraction(fraction: float, name: str) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")


def holdout_split(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Carve a validation split out of ``ds``'s training pairs (``ds.test`` is not used).

    Per user, a seeded random ``round(fraction * c)`` of its c training pairs (at least 1 when
    c >= 2, never all of them) become the returned Dataset's test pairs; the rest its train
    pairs. Same id maps; the name gets a ``:valid`` suffix. Deterministic in (ds, fraction, seed).
    """
    _check_fraction(fraction, "fraction")
    rng = np.random.default_rng(seed)
    key = rng.random(ds.n_train)
    out = _holdout_mask(ds.train_users, ds.n_users, fraction, (key,))
    return Dataset(
        name=f"{ds.name}:valid",
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train_users=ds.train_users[~out],
        train_items=ds.train_items[~out],
        test_users=ds.train_users[out],
        test_items=ds.train_items[out],
    )


def dataset_from_table(
    name: str,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    timestamps: np.ndarray | None,
    *,
    holdout: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Turn raw table rows into a Dataset with a deterministic per-user holdout.

    Rows are mapped in order of first appearance; duplicate pairs keep their latest timestamp.
    With timestamps, each user's latest pairs go to test (ties: the later row in the file is
    later); without, a seeded random choice. See :func:`_holdout_mask` for the counts.
    """
    _check_fraction(holdout, "holdout")
    uniq_users, users = _first_appearance_codes(np.asarray(user_ids))
    uniq_items, items = _first_appearance_codes(np.asarray(item_ids))
    n = len(uniq_items)
    row = np.arange(len(users), dtype=np.int64)
    keys = users * n + items
    if timestamps is None:
        order = np.argsort(keys, kind="stable")
        keep = np.r_[True, keys[order][1:] != keys[order][:-1]]  # first occurrence
        kept = order[keep]
        rng = np.random.default_rng(seed)
        sort_keys: tuple[np.ndarray, ...] = (rng.random(len(kept)),)
    else:
        ts = np.asarray(timestamps, dtype=np.float64)
        order = np.lexsort((row, ts, keys))
        sk = keys[order]
        keep = np.r_[sk[1:] != sk[:-1], True]  # last occurrence = latest timestamp
        kept = order[keep]
        sort_keys = (row[kept], ts[kept])
    u, i = users[kept], items[kept]  # sorted by key = (user, item)
    test = _holdout_mask(u, len(uniq_users), holdout, sort_keys)
    return Dataset(name, uniq_users, uniq_items, u[~test], i[~test], u[test], i[test])


# ----------------------------------------------------------------------------- entry point


def _integer_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], m: int
) -> Dataset:
    n = int(max(train[1].max(initial=-1), test[1].max(initial=-1))) + 1
    m = int(max(m, train[0].max(initial=-1), test[0].max(initial=-1))) + 1
    return Dataset.from_pairs(name, np.arange(m).astype(str), np.arange(n).astype(str), train, test)


def load_dataset(path: str | Path, *, holdout: float = 0.2, seed: int = 0) -> Dataset:
    """Load a dataset from ``path`` (format auto-detected, see the module docstring).

    ``holdout`` (fraction of each user's pairs moved to test) and ``seed`` apply only to
    interactions tables; LightGCN and CSV-pair directories come with their own split.
    """
    path = Path(path)
    _check_fraction(holdout, "holdout")
    if not path.exists():
        raise _error(path, "no such file or directory")
    if path.is_dir():
        name = path.resolve().name
        if (path / "train.txt").is_file() or (path / "test.txt").is_file():
            for f in ("train.txt", "test.txt"):
                if not (path / f).is_file():
                    raise _error(
                        path / f, "missing (a LightGCN dataset needs train.txt and test.txt)"
                    )
            tr_u, tr_i, tr_max = read_lightgcn_file(path / "train.txt")
            if len(tr_u) == 0:
                raise _error(path / "train.txt", "no interactions (every line is a bare user id)")
            te_u, te_i, te_max = read_lightgcn_file(path / "test.txt")
            return _integer_dataset(name, (tr_u, tr_i), (te_u, te_i), max(tr_max, te_max))
        if (path / "train.csv").is_file() or (path / "test.csv").is_file():
            for f in ("train.csv", "test.csv"):
                if not (path / f).is_file():
                    raise _error(
                        path / f, "missing (a CSV-pair dataset needs train.csv and test.csv)"
                    )
            train = read_pair_csv(path / "train.csv")
            test = read_pair_csv(path / "test.csv", allow_empty=True)
            return _integer_dataset(name, train, test, -1)
        table = _table_in_dir(path)
        if table is None:
            raise _error(
                path,
                "no dataset found: expected train.txt+test.txt, train.csv+test.csv "
                "or interactions.csv",
            )
    else:
        if path.suffix.lower() not in (".csv", ".tsv"):
            raise _error(path, "unsupported file type: expected a .csv or .tsv interactions table")
        table, name = path, path.stem
    users, items, ts = read_interactions_table(table)
    return dataset_from_table(name, users, items, ts, holdout=holdout, seed=seed)
