"""The model artifact: the one contract between the trainer (writer) and the service (reader).

numpy-only on purpose (the service never imports torch); arrays are ``.npy`` files loaded with
``allow_pickle=False``, memory-mapped read-only by default (``read_model_dir``): the uvicorn
workers and replicas on one host that serve a version share one copy in the page cache.

Layout under a registry root::

    root/
      CURRENT                  {"version": "...", "previous": "..."}; replaced atomically
      versions/<version>/      one published model, never modified after the rename
        manifest.json          format_version, created_at, dataset_fingerprint, config,
                               metrics, spectrum, trained_on, files{name: {sha256, bytes}},
                               shapes (read as contract.manifest.Manifest)
        user_emb.npy           (m, d) float32  final user embeddings (LightGCN: propagated)
        item_emb.npy           (n, d) float32
        user_ids.npy           (m,) unicode    external id of each user row
        item_ids.npy           (n,) unicode
        seen_indptr.npy        (m + 1,) int64  CSR of the known interactions (seen items)
        seen_indices.npy       (nnz,) int32    item rows, sorted within each user
        item_popularity.npy    (n,) int64      known interactions per item
        top_rows.npy           (m, L) int32    each user's top-L unseen items, best first, ties
                                               by lower row (-1 pads a user with fewer than L)
        top_scores.npy         (m, L) float32  their scores (-inf at the padding)
      the two lists optional (an embedding model's: by inner product, written by the trainer up
      to a size limit, trainer/toplists.py; every filter model and blend has them), and, for a
      spectral-filter model (manifest "model": {"kind": "spectral", ...};
      contract/spectral.py), the filter (its top lists score the filter):
        filter_indptr.npy      (m + 1,) int64  CSR of R̃ = D_U^-1/2 R D_I^-1/2 (R: its pairs)
        filter_indices.npy     (nnz,) int32    item rows, sorted within each user
        filter_data.npy        (nnz,) float32  R̃'s values
        filter_singular_values.npy (K,) float32  top-K singular values of R̃, descending
      user_emb and item_emb then hold the filter's low-pass part (users @ items.T is its
      score): users α r D_I^-1/2 V̄, items D_I^1/2 V̄, with K columns.
      A blend (manifest "model": {"kind": "blend", "blend_weight": β, ...}; contract/blend.py)
      has the filter arrays, its top lists (by the blend's score), DirectSpec+'s embeddings
      as user_emb / item_emb (d columns), and the filter's low-pass item factors apart:
        filter_lowpass.npy     (n, K) float32  D_I^1/2 V̄
      An embedding model may carry its approximate item index, chosen, built and measured
      at publish (contract.annindex; manifest "index" says which, with its parameters,
      recall and latency; absent when that choice was exact search):
        item_index.npy         (b,) uint8      a faiss IVF-Flat or HNSW-Flat index of
                                               item_emb (faiss.serialize_index's bytes)
      versions/.tmp-*          work in progress; ignored by readers, removed by prune
      .CURRENT-*               the next CURRENT while it is written; ignored by readers
      .lock                    held by writers (flock), never by readers

"Seen" is every interaction known when the model was trained: the dataset's training pairs AND
its held-out test pairs (with the ingested rows a retrain merged into them). The service never
recommends a seen item. The held-out split only exists to measure the model: ``metrics`` are
always those of an evaluation run trained on the training pairs alone and scored on the test
pairs. ``trained_on`` (``contract.manifest.TrainedOn``) says which pairs the published
embeddings were fitted on: ``"all"`` (the default, a refit on train and test once evaluated,
trainer/refit.py) or ``"train"`` (the evaluation run itself). A manifest without it (older
models) means ``"train"``.

Publishing writes a temporary directory, fsyncs every file, verifies it by loading it back
(checksums are of the bytes handed to the disk, so a silently corrupted write is caught), renames
it into ``versions/`` and only then switches ``CURRENT`` (temp file, fsync, ``os.replace``, fsync
of the directory). A reader therefore sees either the old model or the complete new one.

A publish that raises (``PublishFailed`` for an OSError such as ENOSPC, keeping its errno) leaves
the registry as it was: no new version, ``CURRENT`` unchanged, its temporary files removed. A
publisher that is killed cannot clean up: its ``.tmp-*`` directory or ``.CURRENT-*`` file is
ignored by readers and removed by the next publish or prune. Writers (publish, activate, prune)
hold an exclusive lock on ``root/.lock``, so whatever temporary file exists while a writer holds
it belongs to a dead one. Readers take no lock.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from contract.manifest import Manifest, parse_manifest

log = logging.getLogger("specrec.artifact")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
POINTER = "CURRENT"
LOCK = ".lock"

# name -> (numpy dtype kind check, ndim)
_ARRAYS: dict[str, tuple[str, int]] = {
    "user_emb": ("f", 2),
    "item_emb": ("f", 2),
    "user_ids": ("U", 1),
    "item_ids": ("U", 1),
    "seen_indptr": ("i", 1),
    "seen_indices": ("i", 1),
    "item_popularity": ("i", 1),
}
# arrays only some models have: name -> (kind, ndim); a model has all of a group or none
_OPTIONAL: dict[str, tuple[str, int]] = {
    "filter_indptr": ("i", 1),
    "filter_indices": ("i", 1),
    "filter_data": ("f", 1),
    "filter_singular_values": ("f", 1),
    "top_rows": ("i", 2),
    "top_scores": ("f", 2),
    "filter_lowpass": ("f", 2),
    "item_index": ("u", 1),
}
_GROUPS = (
    ("filter_indptr", "filter_indices", "filter_data", "filter_singular_values"),
    ("top_rows", "top_scores"),
)


class ArtifactInvalid(Exception):
    """A model directory that must not be served; the message says what is wrong."""


class ModelNotFound(Exception):
    """No such version (or no model published yet)."""


class PublishFailed(OSError):
    """An OSError (errno kept, e.g. ENOSPC) stopped a publish; the registry is as it was."""


@dataclass(frozen=True)
class ModelArrays:
    """Everything the service needs to answer requests. Shapes in the module docstring."""

    user_emb: np.ndarray
    item_emb: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    item_popularity: np.ndarray
    filter_indptr: np.ndarray | None = None
    filter_indices: np.ndarray | None = None
    filter_data: np.ndarray | None = None
    filter_singular_values: np.ndarray | None = None
    top_rows: np.ndarray | None = None
    top_scores: np.ndarray | None = None
    filter_lowpass: np.ndarray | None = None
    item_index: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """ "spectral" (a filter model: the filter arrays are present), "blend" (the filter
        and embeddings: filter_lowpass holds the filter's low-pass factors) or "embedding"."""
        if self.filter_indptr is None:
            return "embedding"
        return "spectral" if self.filter_lowpass is None else "blend"

    @property
    def lowpass(self) -> np.ndarray | None:
        """The filter's low-pass item factors D_I^1/2 V̄ (n, K): item_emb for a spectral
        model, filter_lowpass for a blend, None for an embedding model."""
        if self.filter_indptr is None:
            return None
        return self.item_emb if self.filter_lowpass is None else self.filter_lowpass

    def present(self) -> list[str]:
        """Names of the arrays this model has (required ones first)."""
        return list(_ARRAYS) + [k for k in _OPTIONAL if getattr(self, k) is not None]

    def with_arrays(self, **arrays: Any) -> ModelArrays:
        """A copy with some arrays added or replaced."""
        return dataclasses.replace(self, **arrays)

    @property
    def n_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_emb.shape[1])

    def seen(self, user_row: int) -> np.ndarray:
        """Item rows of the user's known interactions (train and test), shape (k,) int32."""
        return self.seen_indices[self.seen_indptr[user_row] : self.seen_indptr[user_row + 1]]

    @classmethod
    def build(
        cls,
        user_emb: np.ndarray,
        item_emb: np.ndarray,
        user_ids: list[str] | np.ndarray,
        item_ids: list[str] | np.ndarray,
        seen_pairs: tuple[np.ndarray, np.ndarray],
    ) -> ModelArrays:
        """Assemble from embeddings, id lists and the known pairs (user_rows, item_rows):
        duplicates are dropped, so train and test pairs may be concatenated as they are."""
        users, items = (np.asarray(a, dtype=np.int64) for a in seen_pairs)
        m, n = user_emb.shape[0], item_emb.shape[0]
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
        keep = np.ones(len(users), dtype=bool)
        keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])  # drop duplicates
        users, items = users[keep], items[keep]
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=m), out=indptr[1:])
        return cls(
            user_emb=np.ascontiguousarray(user_emb, dtype=np.float32),
            item_emb=np.ascontiguousarray(item_emb, dtype=np.float32),
            user_ids=np.asarray([str(u) for u in user_ids]),
            item_ids=np.asarray([str(i) for i in item_ids]),
            seen_indptr=indptr,
            seen_indices=items.astype(np.int32),
            item_popularity=np.bincount(items, minlength=n).astype(np.int64),
        )

    def validate(self) -> None:
        """Raise ArtifactInvalid unless every array has the right kind, shape and values."""
        for name, (kind, ndim) in _ARRAYS.items():
            arr = getattr(self, name)
            if arr.dtype.kind != kind and not (kind == "i" and arr.dtype.kind == "u"):
                raise ArtifactInvalid(f"{name}: dtype {arr.dtype}, expected kind '{kind}'")
            if arr.ndim != ndim:
                raise ArtifactInvalid(f"{name}: {arr.ndim}-D, expected {ndim}-D")
        m, n = self.user_emb.shape[0], self.item_emb.shape[0]
        if m == 0 or n == 0:
            raise ArtifactInvalid(f"empty model: {m} users, {n} items")
        if self.user_emb.shape[1] != self.item_emb.shape[1]:
            raise ArtifactInvalid(
                f"user dim {self.user_emb.shape[1]} != item dim {self.item_emb.shape[1]}"
            )
        for name, arr, want in (
            ("user_ids", self.user_ids, m),
            ("item_ids", self.item_ids, n),
            ("seen_indptr", self.seen_indptr, m + 1),
            ("item_popularity", self.item_popularity, n),
        ):
            if arr.shape[0] != want:
                raise ArtifactInvalid(f"{name}: length {arr.shape[0]}, expected {want}")
        for name in ("user_emb", "item_emb"):
            if not np.isfinite(getattr(self, name)).all():
                raise ArtifactInvalid(f"{name} contains NaN or inf")
        if len(np.unique(self.user_ids)) != m or len(np.unique(self.item_ids)) != n:
            raise ArtifactInvalid("user_ids or item_ids contain duplicates")
        ptr = self.seen_indptr
        if ptr[0] != 0 or ptr[-1] != len(self.seen_indices) or (np.diff(ptr) < 0).any():
            raise ArtifactInvalid("seen_indptr is not a valid CSR index pointer")
        if len(self.seen_indices) and (self.seen_indices.min() < 0 or self.seen_indices.max() >= n):
            raise ArtifactInvalid(f"seen_indices outside [0, {n})")
        self._validate_optional(m, n)

    def _validate_optional(self, m: int, n: int) -> None:
        for name, (kind, ndim) in _OPTIONAL.items():
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.dtype.kind != kind and not (kind == "i" and arr.dtype.kind == "u"):
                raise ArtifactInvalid(f"{name}: dtype {arr.dtype}, expected kind '{kind}'")
            if arr.ndim != ndim:
                raise ArtifactInvalid(f"{name}: {arr.ndim}-D, expected {ndim}-D")
        if self.item_index is not None and (
            self.item_index.dtype != np.uint8 or not len(self.item_index)
        ):
            raise ArtifactInvalid("item_index: expected non-empty uint8 bytes")
        for group in _GROUPS:
            have = [getattr(self, g) is not None for g in group]
            if any(have) and not all(have):
                raise ArtifactInvalid(f"{', '.join(group)}: all or none")
        if self.filter_indptr is not None:
            ptr, idx, data = self.filter_indptr, self.filter_indices, self.filter_data
            assert idx is not None and data is not None and self.filter_singular_values is not None
            if len(ptr) != m + 1 or ptr[0] != 0 or ptr[-1] != len(idx) or (np.diff(ptr) < 0).any():
                raise ArtifactInvalid("filter_indptr is not a valid CSR index pointer")
            if len(data) != len(idx):
                raise ArtifactInvalid("filter_data and filter_indices differ in length")
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                raise ArtifactInvalid(f"filter_indices outside [0, {n})")
            if not np.isfinite(data).all() or not np.isfinite(self.filter_singular_values).all():
                raise ArtifactInvalid("filter arrays contain NaN or inf")
            lowpass = self.lowpass
            assert lowpass is not None
            if lowpass.shape[0] != n or len(self.filter_singular_values) != lowpass.shape[1]:
                raise ArtifactInvalid(
                    f"filter_singular_values: length {len(self.filter_singular_values)}, "
                    f"low-pass factors {lowpass.shape}: expected ({n}, "
                    f"{len(self.filter_singular_values)})"
                )
            if not np.isfinite(lowpass).all():
                raise ArtifactInvalid("filter_lowpass contains NaN or inf")
        elif self.filter_lowpass is not None:
            raise ArtifactInvalid("filter_lowpass without the filter arrays")
        if self.top_rows is not None:
            assert self.top_scores is not None
            if self.top_rows.shape[0] != m or self.top_rows.shape != self.top_scores.shape:
                raise ArtifactInvalid(
                    f"top_rows {self.top_rows.shape} / top_scores {self.top_scores.shape}: "
                    f"expected ({m}, L) each"
                )
            if self.top_rows.size and (self.top_rows.min() < -1 or self.top_rows.max() >= n):
                raise ArtifactInvalid(f"top_rows outside [-1, {n})")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    manifest: Manifest
    arrays: ModelArrays


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` whole or not at all: `write(f)` fills a temporary file beside it, which is
    fsynced and renamed over `path`, then the directory is fsynced (the rename made durable).
    On any error the temporary file is removed and `path` is as it was."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class _DurableFile:
    """Write-only raw file: every byte goes through ``os.write`` and into a running sha256;
    ``close`` fsyncs. Not an ``io`` file, so ``np.save`` streams to it in bounded chunks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha256 = hashlib.sha256()
        self.size = 0

    @classmethod
    def create(cls, path: Path) -> _DurableFile:
        return cls(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):  # os.write may write less than asked
            done += os.write(self.fd, view[done:])
        self.sha256.update(view)
        self.size += len(view)
        return len(view)

    def close(self, sync: bool = True) -> None:
        try:
            if sync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)

    def __enter__(self) -> _DurableFile:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(sync=exc_type is None)


def _write_durable(path: Path, data: bytes) -> None:
    with _DurableFile.create(path) as f:
        f.write(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _os_reason(e: BaseException) -> str:
    """Why a read failed, without the file's path (an OSError's str names it)."""
    return (e.strerror or type(e).__name__) if isinstance(e, OSError) else str(e)


def read_model_dir(path: Path, verify_checksums: bool = True, mmap: bool = True) -> LoadedModel:
    """Load and fully validate one model directory; raise ArtifactInvalid on any problem.

    `mmap` (the default): every array is a read-only memory map of its file (``np.memmap``),
    so the processes serving one version share one copy in the page cache and nothing writes
    into a published file; False: private, writable copies. Verifying a checksum reads each
    file once through that page cache and keeps nothing.

    Messages name the directory (the version), never the server path: they reach HTTP clients
    (POST /models/{version}/activate, GET /models).
    """
    path = Path(path)
    where = path.name  # the version
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as e:
        raise ArtifactInvalid(f"{where}: no {MANIFEST}") from e
    except OSError as e:
        raise ArtifactInvalid(f"{where}: cannot read {MANIFEST}: {_os_reason(e)}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactInvalid(f"{where}: {MANIFEST} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        got = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise ArtifactInvalid(f"{where}: format_version {got!r}, expected {FORMAT_VERSION}")
    files = manifest.get("files")
    required = {f"{k}.npy" for k in _ARRAYS}
    known = required | {f"{k}.npy" for k in _OPTIONAL}
    if not isinstance(files, dict) or not required <= set(files) or not set(files) <= known:
        raise ArtifactInvalid(
            f"{where}: manifest 'files' must list {sorted(_ARRAYS)} and only known optional "
            f"arrays ({sorted(_OPTIONAL)})"
        )
    loaded: dict[str, np.ndarray] = {}
    for name in [f.removesuffix(".npy") for f in files]:
        fname = f"{name}.npy"
        fpath = path / fname
        if not fpath.is_file():
            raise ArtifactInvalid(f"{where}: missing {fname}")
        if verify_checksums and _sha256(fpath) != files[fname].get("sha256"):
            raise ArtifactInvalid(f"{where}: checksum mismatch for {fname}")
        try:
            loaded[name] = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ArtifactInvalid(f"{where}: cannot read {fname}: {_os_reason(e)}") from e
    arrays = ModelArrays(**loaded)
    arrays.validate()
    try:
        typed = parse_manifest(manifest)
    except ValueError as e:
        raise ArtifactInvalid(f"{where}: {e}") from e
    shape = typed.shape
    if shape is None or (shape.n_users, shape.n_items, shape.dim) != (
        arrays.n_users,
        arrays.n_items,
        arrays.dim,
    ):
        raise ArtifactInvalid(
            f"{where}: manifest shape {manifest.get('shape', {})} does not match the arrays"
        )
    shipped = typed.index is not None and typed.index.kind != "flat"
    if shipped != (arrays.item_index is not None):
        kind = typed.index.kind if typed.index is not None else None
        raise ArtifactInvalid(
            f"{where}: manifest index kind {kind!r} "
            + ("without item_index.npy" if shipped else "but an item_index.npy")
        )
    return LoadedModel(version=typed.version or path.name, manifest=typed, arrays=arrays)


class ModelRegistry:
    """Versioned model directories under `root` with an atomically switched CURRENT pointer."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    # ---- reading -------------------------------------------------------------------------
    def pointer(self) -> dict[str, str | None]:
        """{"version": current or None, "previous": the one before or None}."""
        try:
            data = json.loads((self.root / POINTER).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            return {"version": None, "previous": None}
        return {"version": data.get("version"), "previous": data.get("previous")}

    def current(self) -> str | None:
        return self.pointer()["version"]

    def versions(self) -> list[str]:
        """Published versions, oldest first (names sort by creation time)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def manifest(self, version: str) -> Manifest:
        """The manifest of `version` (not checked against its arrays: ``load`` does that)."""
        path = self._version_path(version) / MANIFEST
        try:
            return parse_manifest(json.loads(path.read_text()))
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            raise ArtifactInvalid(f"{version}: unreadable manifest: {_os_reason(e)}") from e

    def load(self, version: str | None = None, *, mmap: bool = True) -> LoadedModel:
        """Load `version` (default: CURRENT) with full validation; its arrays are read-only
        memory maps unless `mmap` is False (``read_model_dir``)."""
        version = version or self.current()
        if version is None:
            raise ModelNotFound("no model has been published yet")
        return read_model_dir(self._version_path(version), mmap=mmap)

    def _version_path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or ".." in version:
            raise ModelNotFound(f"invalid version name {version!r}")
        path = self.versions_dir / version
        if not path.is_dir():
            raise ModelNotFound(f"no model version {version!r}")
        return path

    # ---- writing -------------------------------------------------------------------------
    def publish(
        self,
        arrays: ModelArrays,
        *,
        config: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        spectrum: dict[str, Any] | None = None,
        dataset_fingerprint: str = "",
        extra: dict[str, Any] | None = None,
        keep: int = 5,
        activate: bool = True,
    ) -> str:
        """Write, verify, rename into place, optionally switch CURRENT; return the version.

        Raises ArtifactInvalid (bad arrays, or the written copy does not verify) or
        PublishFailed (an OSError on the way, errno kept); then no new version is listed and
        CURRENT is unchanged.
        """
        arrays.validate()
        at = _Step("taking the registry lock")
        version = "a new version"
        tmp: Path | None = None
        try:
            with self._locked():
                at.now = "removing leftovers of crashed publishers"
                self._remove_leftovers()
                at.now = "creating versions/"
                self.versions_dir.mkdir(parents=True, exist_ok=True)
                version = self._new_version_name()
                try:
                    at.now = "creating the temporary directory"
                    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=self.versions_dir))
                    manifest = _manifest(
                        version, arrays, config, metrics, spectrum, dataset_fingerprint, extra
                    )
                    _write_model_dir(tmp, arrays, manifest, at)
                    at.now = "verifying the written copy"
                    read_model_dir(tmp)  # what is on disk, against checksums of what was sent
                    at.now = "renaming into versions/"
                    os.rename(tmp, self.versions_dir / version)
                    tmp = None
                    at.now = "syncing versions/"
                    fsync_dir(self.versions_dir)
                    if activate:
                        self._switch(version, at)
                except BaseException:
                    self._discard(version, tmp)
                    raise
                try:
                    self._prune(keep)
                except OSError as e:  # published already; the next prune tries again
                    log.warning("published %s, but pruning failed: %s", version, e)
        except OSError as e:
            try:
                now = f"CURRENT is {self.current()}"
            except OSError:
                now = "CURRENT is unreadable"
            msg = f"publishing {version} failed while {at.now}: {e.strerror or e}; {now}"
            raise (PublishFailed(e.errno, msg) if e.errno else PublishFailed(msg)) from e
        return version

    def activate(self, version: str, verify: bool = True) -> None:
        """Point CURRENT at `version` (validated first unless `verify` is False).

        On an OSError CURRENT is unchanged (restored if only the directory fsync failed).
        """
        path = self._version_path(version)
        if verify:
            read_model_dir(path)
        with self._locked():
            self._switch(version, _Step("activating"))

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest `keep` versions (never CURRENT or its previous), and the
        temporary files of crashed writers."""
        with self._locked():
            return self._prune(keep)

    # ---- writing, with the lock held ------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive among writers of this registry (processes and threads); readers never wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _switch(self, version: str, at: _Step) -> None:
        old_raw = self._pointer_bytes()
        old = self.pointer()
        cur = old["version"]
        previous = cur if cur and cur != version else old["previous"]
        payload = json.dumps({"version": version, "previous": previous}).encode()
        at.now = "writing CURRENT"
        try:
            self._write_pointer(payload, at)
        except BaseException:
            if self._pointer_bytes() == payload and old_raw != payload:
                failed_at, at.now = at.now, "restoring CURRENT after a failed directory fsync"
                self._write_pointer(old_raw, _Step(at.now))
                at.now = failed_at
            raise

    def _write_pointer(self, payload: bytes | None, at: _Step) -> None:
        """Replace CURRENT by `payload` (None: remove it) atomically and durably."""
        target = self.root / POINTER
        if payload is None:
            target.unlink(missing_ok=True)
        else:
            fd, tmp_name = tempfile.mkstemp(prefix=".CURRENT-", dir=self.root)
            try:
                with _DurableFile(fd) as f:
                    f.write(payload)
                at.now = "replacing CURRENT"
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        at.now = "syncing the registry root"
        fsync_dir(self.root)

    def _pointer_bytes(self) -> bytes | None:
        try:
            return (self.root / POINTER).read_bytes()
        except FileNotFoundError:
            return None

    def _discard(self, version: str, tmp: Path | None) -> None:
        """Undo a failed publish: its temporary directory, and its version unless CURRENT
        names it (only when restoring the old pointer failed too)."""
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        final = self.versions_dir / version
        if final.is_dir() and self.current() != version:
            shutil.rmtree(final, ignore_errors=True)

    def _prune(self, keep: int) -> list[str]:
        keep = max(keep, 1)
        ptr = self.pointer()
        protected = {v for v in (ptr["version"], ptr["previous"]) if v}
        versions = self.versions()
        doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v not in protected]
        for v in doomed:
            shutil.rmtree(self.versions_dir / v, ignore_errors=True)
        self._remove_leftovers()
        return doomed

    def _remove_leftovers(self) -> None:
        """Temporary files of writers that died: with the lock held, no live writer has any."""
        if self.versions_dir.is_dir():
            for p in self.versions_dir.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".CURRENT-*"):
            p.unlink(missing_ok=True)

    def _new_version_name(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        existing = set(self.versions())
        for n in range(1000):
            name = f"v{stamp}-{n:03d}"
            if name not in existing:
                return name
        raise RuntimeError("more than 1000 versions published in one second")


class _Step:
    """What a publish is doing, for the error message."""

    def __init__(self, now: str) -> None:
        self.now = now


def _manifest(
    version: str,
    arrays: ModelArrays,
    config: dict[str, Any],
    metrics: dict[str, Any] | None,
    spectrum: dict[str, Any] | None,
    dataset_fingerprint: str,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest without its "files" entry."""
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_unix": time.time(),
        "dataset_fingerprint": dataset_fingerprint,
        "shape": {
            "n_users": arrays.n_users,
            "n_items": arrays.n_items,
            "dim": arrays.dim,
            "n_seen": int(len(arrays.seen_indices)),
        },
        "config": config,
        "metrics": metrics or {},
        "spectrum": spectrum or {},
        **(extra or {}),
    }


def _write_model_dir(tmp: Path, arrays: ModelArrays, manifest: dict[str, Any], at: _Step) -> None:
    """Every array, then the manifest with the checksums of the bytes written; all fsynced."""
    files: dict[str, dict[str, Any]] = {}
    for name in arrays.present():
        fname = f"{name}.npy"
        at.now = f"writing {fname}"
        with _DurableFile.create(tmp / fname) as f:
            np.save(f, getattr(arrays, name), allow_pickle=False)
        files[fname] = {"sha256": f.sha256.hexdigest(), "bytes": f.size}
    at.now = f"writing {MANIFEST}"
    body = json.dumps(
        {**manifest, "files": files}, indent=2, default=_json_default, allow_nan=True
    ).encode()
    _write_durable(tmp / MANIFEST, body)
    at.now = "syncing the temporary directory"
    fsync_dir(tmp)
