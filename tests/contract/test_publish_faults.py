"""Publishing under faults: ENOSPC and SIGKILL at every os call of a publish, torn and lying
writes, a reader racing the pointer switch. Each test asserts what survives, byte for byte."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from contract.artifact import (
    ArtifactInvalid,
    ModelArrays,
    ModelNotFound,
    ModelRegistry,
    PublishFailed,
    read_model_dir,
)
from tests.contract.faultkit import Faults, Point, record_publish, tiny_arrays

REPO = Path(__file__).resolve().parents[2]


def _points() -> list[Point]:
    """The os calls of the second publish into a registry (what every test below repeats)."""
    with tempfile.TemporaryDirectory() as d:
        ModelRegistry(d).publish(tiny_arrays(1), config={"seed": 1})
        return record_publish(Path(d))


POINTS = _points()
IDS = [f"{i:02d}-{p}" for i, p in enumerate(POINTS)]
WRITES = [i for i, p in enumerate(POINTS) if p.op == "write"]
SWITCH = POINTS.index(Point("replace", ".CURRENT-tmp>CURRENT"))  # the commit point


def _tree(root: Path) -> dict[str, str]:
    """Every file under root -> sha256 of its bytes (directories as '<dir>')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _digest(arrays: ModelArrays) -> dict[str, str]:
    return {
        name: hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
        for name, arr in arrays.__dict__.items()
    }


def _arrays_digest(reg: ModelRegistry, version: str | None = None) -> dict[str, str]:
    """Checksums of what a reader loads (CURRENT unless `version`)."""
    return _digest(reg.load(version).arrays)


def _expected_digest(seed: int) -> dict[str, str]:
    return _digest(tiny_arrays(seed))


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    """A registry serving one model (seed 1)."""
    r = ModelRegistry(tmp_path)
    r.publish(tiny_arrays(1), config={"seed": 1})
    assert _arrays_digest(r) == _expected_digest(1)
    return r


def _assert_next_publish_works(reg: ModelRegistry, old: str) -> None:
    """A later publish becomes CURRENT, serves its own arrays and leaves no temporary files."""
    new = reg.publish(tiny_arrays(3), config={"seed": 3})
    assert reg.pointer() == {"version": new, "previous": old}
    assert _arrays_digest(reg) == _expected_digest(3)
    assert not list(reg.versions_dir.glob(".tmp-*"))
    assert not list(reg.root.glob(".CURRENT-*"))


def test_publish_protocol_order() -> None:
    """The claims of the module docstring, read off the recorded os calls: each file written
    then fsynced in the temporary directory, the directory fsynced, renamed, versions/ fsynced,
    then CURRENT written to a temp file, fsynced, replaced, and the root fsynced; CURRENT itself
    is never opened for writing."""
    names = [
        "user_emb.npy",
        "item_emb.npy",
        "user_ids.npy",
        "item_ids.npy",
        "seen_indptr.npy",
        "seen_indices.npy",
        "item_popularity.npy",
        "manifest.json",
    ]
    expected = [Point("open", ".lock"), Point("mkdir", "versions/.tmp")]
    for name in names:
        f = f"versions/.tmp/{name}"
        writes = [p for p in POINTS if p == Point("write", f)]
        assert writes, name
        expected += [Point("open", f), *writes, Point("fsync", f)]
    expected += [
        Point("open", "versions/.tmp"),
        Point("fsync", "versions/.tmp"),
        Point("rename", "versions/.tmp>versions/V"),
        Point("open", "versions"),
        Point("fsync", "versions"),
        Point("open", ".CURRENT-tmp"),
        Point("write", ".CURRENT-tmp"),
        Point("fsync", ".CURRENT-tmp"),
        Point("replace", ".CURRENT-tmp>CURRENT"),
        Point("open", "."),
        Point("fsync", "."),
    ]
    assert POINTS == expected


@pytest.mark.parametrize("n", range(len(POINTS)), ids=IDS)
def test_enospc_at_every_os_call_leaves_registry_unchanged(reg: ModelRegistry, n: int) -> None:
    old = reg.current()
    before = _tree(reg.root)
    with Faults(reg.root, at=n) as faults, pytest.raises(PublishFailed) as exc:
        reg.publish(tiny_arrays(2), config={"seed": 2})
    assert faults.hit == POINTS[n]  # the fault struck where this case says
    assert exc.value.errno == errno.ENOSPC
    assert "No space left on device" in str(exc.value)
    assert str(exc.value).endswith(f"; CURRENT is {old}")
    assert isinstance(exc.value.__cause__, OSError)
    # byte-identical registry: same CURRENT, same version, no temporary file of the attempt
    assert _tree(reg.root) == before
    assert reg.current() == old and reg.versions() == [old]
    assert _arrays_digest(reg) == _expected_digest(1)
    _assert_next_publish_works(reg, old)


def test_enospc_message_names_the_step(reg: ModelRegistry) -> None:
    n = POINTS.index(Point("write", "versions/.tmp/item_emb.npy"))
    with Faults(reg.root, at=n), pytest.raises(PublishFailed, match="while writing item_emb.npy"):
        reg.publish(tiny_arrays(2), config={})
    fsync_root = len(POINTS) - 1
    with Faults(reg.root, at=fsync_root), pytest.raises(PublishFailed) as exc:
        reg.publish(tiny_arrays(2), config={})
    assert "while restoring CURRENT" not in str(exc.value)
    assert "while syncing the registry root" in str(exc.value)


def _crash(root: Path, n: int, action: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.contract.faultkit", str(root), str(n), action],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def _assert_survives_crash(reg: ModelRegistry, old: str, n: int) -> None:
    """After a publisher died at call `n`: readers see the old model, or (dead after the
    pointer switch) the complete new one; leftovers are invisible, then cleaned up."""
    versions = reg.versions()
    if n > SWITCH:  # died after os.replace(CURRENT): the publish was committed
        new = reg.current()
        assert new != old and versions == [old, new]
        assert reg.pointer()["previous"] == old
        assert _arrays_digest(reg) == _expected_digest(2)
    else:
        assert reg.current() == old
        assert _arrays_digest(reg) == _expected_digest(1)
        if n > POINTS.index(Point("rename", "versions/.tmp>versions/V")):
            (new,) = set(versions) - {old}  # complete and valid, but never served
            assert _arrays_digest(reg, new) == _expected_digest(2)
        else:
            assert versions == [old]
    json.loads((reg.root / "CURRENT").read_text())  # never torn
    for leftover in reg.versions_dir.glob(".tmp-*"):  # a dead publisher's work in progress
        with pytest.raises(ModelNotFound):
            reg.load(leftover.name)
    _assert_next_publish_works(reg, reg.current() or "")


@pytest.mark.parametrize("n", range(len(POINTS)), ids=IDS)
def test_sigkill_at_every_os_call(reg: ModelRegistry, n: int) -> None:
    old = reg.current()
    assert old is not None
    _crash(reg.root, n, "kill")
    _assert_survives_crash(reg, old, n)


@pytest.mark.parametrize("n", WRITES, ids=[IDS[i] for i in WRITES])
def test_sigkill_in_the_middle_of_every_write(reg: ModelRegistry, n: int) -> None:
    old = reg.current()
    assert old is not None
    _crash(reg.root, n, "torn")
    _assert_survives_crash(reg, old, n)


def test_crash_leftovers_are_removed_by_the_next_publish_and_prune(reg: ModelRegistry) -> None:
    """However young (the writers' lock says their owner is dead), a crashed writer's temp files
    are removed by the next publish before it writes anything, and by prune."""
    old = reg.current()
    _crash(reg.root, POINTS.index(Point("fsync", ".CURRENT-tmp")), "kill")
    assert len(list(reg.root.glob(".CURRENT-*"))) == 1  # the dead writer's next pointer
    assert list(reg.versions_dir.glob(".tmp-*")) == []
    _crash(reg.root, POINTS.index(Point("fsync", "versions/.tmp/manifest.json")), "kill")
    assert list(reg.root.glob(".CURRENT-*")) == []  # removed by the second publisher
    assert len(list(reg.versions_dir.glob(".tmp-*"))) == 1  # which died in turn
    reg.prune(keep=5)
    assert list(reg.versions_dir.glob(".tmp-*")) == []
    assert reg.current() == old and _arrays_digest(reg) == _expected_digest(1)


def test_live_writer_temp_files_are_not_removed(reg: ModelRegistry) -> None:
    """prune waits for the lock a live publisher holds, so it never deletes its work."""
    live = reg.versions_dir / ".tmp-vlive-x"
    started, release = threading.Event(), threading.Event()

    def publisher() -> None:
        with reg._locked():
            live.mkdir()
            started.set()
            release.wait(5)

    t = threading.Thread(target=publisher)
    t.start()
    assert started.wait(5)
    pruner = threading.Thread(target=ModelRegistry(reg.root).prune, args=(5,))
    pruner.start()
    pruner.join(0.3)
    assert pruner.is_alive() and live.is_dir()  # blocked on the lock, work untouched
    release.set()
    t.join(5)
    pruner.join(5)
    assert not pruner.is_alive() and not live.exists()  # now it is a dead writer's leftover


def test_lying_write_is_caught_by_verification(reg: ModelRegistry) -> None:
    """A write that reports success but stores other bytes: the checksum is of the bytes sent,
    so the verification load refuses the copy and nothing becomes visible."""
    old, before = reg.current(), _tree(reg.root)
    target = os.path.realpath(reg.versions_dir)
    real_write = os.write

    def flipping_write(fd: int, data: bytes) -> int:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(target) and path.endswith("item_emb.npy") and len(data) > 8:
            corrupted = bytearray(data)
            corrupted[-1] ^= 0xFF
            return real_write(fd, bytes(corrupted))
        return real_write(fd, data)

    os.write = flipping_write
    try:
        with pytest.raises(ArtifactInvalid, match="checksum mismatch for item_emb.npy"):
            reg.publish(tiny_arrays(2), config={})
    finally:
        os.write = real_write
    assert _tree(reg.root) == before and reg.current() == old
    _assert_next_publish_works(reg, old or "")


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write may write fewer bytes than asked; the publish must loop, not truncate."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, memoryview(data)[:3]))
    reg = ModelRegistry(tmp_path)
    v = reg.publish(tiny_arrays(2), config={})
    monkeypatch.undo()
    assert reg.current() == v
    assert _arrays_digest(reg) == _expected_digest(2)
    read_model_dir(reg.versions_dir / v)


def test_failed_first_publish_leaves_no_pointer(tmp_path: Path) -> None:
    """ENOSPC at the root fsync of the very first publish: CURRENT is removed again."""
    reg = ModelRegistry(tmp_path)
    with tempfile.TemporaryDirectory() as d:
        first = record_publish(Path(d))
    with Faults(tmp_path, at=len(first) - 1), pytest.raises(PublishFailed) as exc:
        reg.publish(tiny_arrays(2), config={})
    assert str(exc.value).endswith("CURRENT is None")
    assert reg.current() is None and reg.versions() == []
    assert not (tmp_path / "CURRENT").exists()
    with pytest.raises(ModelNotFound):
        reg.load()
    v = reg.publish(tiny_arrays(2), config={})
    assert reg.pointer() == {"version": v, "previous": None}


def test_reader_never_sees_a_torn_pointer(reg: ModelRegistry) -> None:
    """A reader polling CURRENT (what the service's watcher does) while versions are published
    and activated back and forth only ever reads a complete pointer to a complete version."""
    published = set(reg.versions())
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def reader() -> None:
        reader_reg = ModelRegistry(reg.root)
        while not stop.is_set():
            raw = (reg.root / "CURRENT").read_bytes()
            try:
                version = json.loads(raw)["version"]
                read_model_dir(reader_reg.versions_dir / version)
            except (ValueError, KeyError, ArtifactInvalid) as e:
                bad.append(f"{raw!r}: {e}")
                continue
            seen.append(version)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(15):
            published.add(reg.publish(tiny_arrays(10 + i), config={}, keep=100))
            reg.activate(sorted(published)[0])
    finally:
        stop.set()
        t.join(5)
    assert bad == []
    assert len(seen) > 15 and set(seen) <= published
