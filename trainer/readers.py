"""Fast, strict readers for the dataset file formats (numpy only); used by trainer.data.

Every reader takes a whole file at once: one regex pass validates the text and numpy converts
the integers (no per-token Python loop), so Gowalla's 4.6 MB train.txt parses in ~0.1 s.
Problems raise :class:`DataError` whose message is ``"<file>: line <n>: <reason>"`` (line
1-based; omitted when the problem is the whole file). The formats are described in
:mod:`trainer.data`.
"""

from __future__ import annotations

import csv
import io
import re
from itertools import compress, repeat
from pathlib import Path

import numpy as np

MAX_ID = 2**31 - 1  # integer ids above this are refused (rows are int32 in artifacts)
_MAX_DIGITS = len(str(MAX_ID))
MAX_FIELD_CHARS = 512  # longest id / timestamp field accepted in an interactions table


class DataError(ValueError):
    """A dataset file that cannot be used; the message names the file, line and reason."""


def file_error(path: Path, reason: str, line: int | None = None) -> DataError:
    """A DataError for ``path`` (and a 1-based line), message ``"<path>: line <n>: <reason>"``."""
    where = f"{path}" if line is None else f"{path}: line {line}"
    return DataError(f"{where}: {reason}")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise file_error(path, f"cannot read file ({e.strerror or e})") from e
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        data = data[3:]
    if not data.strip():
        raise file_error(path, "file is empty")
    return data


def _line_of(data: bytes, pos: int) -> int:
    """0-based line index of byte offset ``pos``."""
    return data.count(b"\n", 0, pos)


def _bad_token_reason(token: bytes) -> str:
    text = token.decode("utf-8", errors="replace")
    if re.fullmatch(rb"-\d+", token):
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
        raise file_error(path, _bad_token_reason(token), first_line + line)

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
        raise file_error(path, f"id {token} exceeds {MAX_ID}", first_line + int(token_line[t]))

    text = data.replace(b",", b" ") if comma else data
    values = np.fromstring(text, dtype=np.int64, sep=" ")  # text mode; digits only here
    if len(values) != len(starts):  # cannot happen after the checks above
        raise file_error(path, f"parsed {len(values)} ids, expected {len(starts)}")
    over = np.flatnonzero(values > MAX_ID)
    if len(over):
        t = over[0]
        raise file_error(path, f"id {values[t]} exceeds {MAX_ID}", first_line + int(token_line[t]))
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
        raise file_error(path, f"missing header columns: expected 'user,item', got {shown!r}", 1)
    body = b"" if nl < 0 else data[nl + 1 :]
    if not body.strip():
        if allow_empty:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        raise file_error(path, "no interactions after the header")
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
        raise file_error(path, reason, 2 + line)
    # the comma must sit between the two ids ("1 2," has the right counts but is wrong)
    tok_start = np.flatnonzero(~_SEPARATORS[buf] & np.r_[True, _SEPARATORS[buf][:-1]])
    first_tok, second_tok = tok_start[0::2], tok_start[1::2]
    misplaced = np.flatnonzero((commas < first_tok) | (commas > second_tok))
    if len(misplaced):
        line = int(comma_line[misplaced[0]])
        raise file_error(path, "misplaced comma: expected 'user,item'", 2 + line)
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
                raise file_error(
                    path,
                    f"timestamp {value!r} is neither a number nor an ISO-8601 date/time",
                    int(line),
                ) from None
    raise file_error(path, "mixed timestamp formats (numbers and dates)")


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
        path = table_in_dir(path) or path / "interactions.csv"
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise file_error(path, "not valid UTF-8 text", _line_of(data, e.start) + 1) from None
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
            raise file_error(path, f"malformed CSV ({e})", reader.line_num) from None
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
        text_lines = list(compress(body, nonblank.tolist()))
        lines = np.flatnonzero(nonblank) + 2
        n_fields = np.fromiter(map(str.count, text_lines, repeat(delim)), np.int64, len(lines))
        n_fields += 1
        flat = delim.join(text_lines).split(delim) if text_lines else []

    names = [h.strip().lower() for h in header]
    missing = [c for c in ("user_id", "item_id") if c not in names]
    if missing:
        raise file_error(
            path,
            f"missing header columns {missing}: expected 'user_id{delim}item_id[{delim}timestamp]',"
            f" got {delim.join(header).strip()!r}",
            1,
        )
    dup = sorted({c for c in names if c and names.count(c) > 1})
    if dup:
        raise file_error(path, f"duplicate header columns {dup}", 1)
    ncols = len(names)
    wrong = np.flatnonzero(n_fields != ncols)
    if len(wrong):
        w = wrong[0]
        raise file_error(
            path,
            f"wrong column count: expected {ncols} ({delim.join(names)}), found {n_fields[w]}",
            int(lines[w]),
        )
    if len(lines) == 0:
        raise file_error(path, "no interactions after the header")
    longest = max(map(len, flat))
    if longest > MAX_FIELD_CHARS:  # a fixed-width str array of such fields would be huge
        at = next(k for k, f in enumerate(flat) if len(f) > MAX_FIELD_CHARS) // ncols
        raise file_error(path, f"field longer than {MAX_FIELD_CHARS} characters", int(lines[at]))
    table = np.char.strip(np.asarray(flat, dtype=str).reshape(-1, ncols))

    out = []
    for col_name in ("user_id", "item_id"):
        col = table[:, names.index(col_name)]
        empty = np.flatnonzero(np.char.str_len(col) == 0)
        if len(empty):
            raise file_error(path, f"empty {col_name}", int(lines[empty[0]]))
        out.append(col)
    ts = None
    if "timestamp" in names:
        col = table[:, names.index("timestamp")]
        empty = np.flatnonzero(np.char.str_len(col) == 0)
        if len(empty):
            raise file_error(path, "empty timestamp", int(lines[empty[0]]))
        ts = _parse_timestamps(col, lines, path)
        bad = np.flatnonzero(~np.isfinite(ts))
        if len(bad):
            raise file_error(path, f"timestamp {col[bad[0]]!r} is not finite", int(lines[bad[0]]))
    return out[0], out[1], ts


def table_in_dir(path: Path) -> Path | None:
    """The interactions table inside directory ``path``, if there is one."""
    for name in ("interactions.csv", "interactions.tsv"):
        if (path / name).is_file():
            return path / name
    return None
