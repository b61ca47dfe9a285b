"""Which model is serving, how it changes, and the watcher that notices new versions.

``ModelState.serving`` is one reference, replaced by a single assignment (atomic under the
GIL). Handlers read it once at the start, so a request finishes on the model it started with
while the next request already sees the new one. Loading, validating and indexing happen on the
watcher thread (or the admin's activate call), never on the event loop.

A version that fails validation is remembered with the state of its directory and not retried
until that directory changes, so a corrupt artifact costs one log line, not a tight loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from contract.artifact import MANIFEST, ArtifactInvalid, ModelNotFound, ModelRegistry
from service.errors import ArtifactRefused, ModelNotReady, UnknownVersion
from service.serving import Search, ServingModel, SpectrumSnapshot, search_inline
from service.settings import IndexSettings

log = logging.getLogger("specrec.service.state")

Listener = Callable[[ServingModel], None]


def _dir_key(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a version's manifest, or None when absent: changes when rewritten."""
    try:
        st = (path / MANIFEST).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class ModelState:
    """The serving model, the previous model's spectrum, and versions refused so far."""

    def __init__(
        self, registry: ModelRegistry, config: IndexSettings, search: Search = search_inline
    ) -> None:
        self.registry = registry
        self.config = config
        self.search = search  # how a loaded model's index is searched (the batcher's)
        self._serving: ServingModel | None = None
        self.previous_spectrum: SpectrumSnapshot | None = None
        self.failed: dict[str, str] = {}  # version -> reason (for /models and logs)
        self._failed_keys: dict[str, tuple[int, int] | None] = {}
        self._lock = threading.Lock()  # one load at a time (watcher vs activate)
        self.listeners: list[Listener] = []  # called after each swap (metrics)
        self.failure_listeners: list[Callable[[str, str], None]] = []  # (version, reason)
        self.load_failures = 0

    # ---- reading -------------------------------------------------------------------------
    @property
    def serving(self) -> ServingModel | None:
        return self._serving

    def require(self) -> ServingModel:
        """The serving model, or ModelNotReady (503) before the first one is loaded."""
        model = self._serving
        if model is None:
            raise ModelNotReady("no model is loaded yet; publish one to the registry")
        return model

    # ---- changing ------------------------------------------------------------------------
    def sync(self) -> bool:
        """Load CURRENT if it differs from the serving version; True when a swap happened.

        Never raises for a bad artifact: it is logged, remembered and skipped.
        """
        version = self.registry.current()
        if version is None or (self._serving is not None and self._serving.version == version):
            return False
        path = self.registry.versions_dir / version
        if version in self._failed_keys and self._failed_keys[version] == _dir_key(path):
            return False
        with self._lock:
            if self._serving is not None and self._serving.version == version:
                return False
            try:
                model = self._build(version)
            except (ArtifactInvalid, ModelNotFound) as e:
                self._remember_failure(version, path, e)
                if self._serving is None:  # nothing to keep serving: try the last good one
                    return self._load_previous()
                return False
            if self.registry.current() != version:
                log.info("model %s was superseded while loading; not swapping", version)
                return False
            self._swap(model)
        return True

    def _load_previous(self) -> bool:
        """Serve CURRENT's ``previous`` when CURRENT itself is refused and nothing serves yet."""
        prev = self.registry.pointer()["previous"]
        if not prev or prev in self.failed:
            return False
        try:
            model = self._build(prev)
        except (ArtifactInvalid, ModelNotFound) as e:
            self._remember_failure(prev, self.registry.versions_dir / prev, e)
            return False
        log.warning("CURRENT is refused; serving the previous version %s meanwhile", prev)
        self._swap(model)
        return True

    def activate(self, version: str) -> ServingModel:
        """Validate and index `version`, point CURRENT at it, then serve it (admin rollback).

        Raises UnknownVersion (404) or ArtifactRefused (409); the serving model is unchanged then.
        """
        with self._lock:
            if self._serving is not None and self._serving.version == version:
                if self.registry.current() != version:
                    self.registry.activate(version, verify=False)
                return self._serving
            try:
                model = self._build(version)
            except ModelNotFound as e:
                raise UnknownVersion(str(e)) from e
            except ArtifactInvalid as e:
                self._remember_failure(version, self.registry.versions_dir / version, e)
                raise ArtifactRefused(f"version {version} cannot be served: {e}") from e
            self.registry.activate(version, verify=False)  # validated by _build just now
            self._swap(model)
            return model

    def release(self) -> None:
        """Drop the serving model (shutdown); later requests get 503."""
        self._serving = None

    def _build(self, version: str) -> ServingModel:
        loaded = self.registry.load(version)  # checksums, shapes, finite values
        if loaded.version != version:
            log.warning(
                "version %s has manifest version %r; serving it as %s",
                version,
                loaded.version,
                version,
            )
        return ServingModel.build(loaded, self.config, version, self.search)

    def _remember_failure(self, version: str, path: Path, exc: Exception) -> None:
        self.load_failures += 1
        self.failed[version] = str(exc)
        self._failed_keys[version] = _dir_key(path)
        serving = self._serving.version if self._serving else None
        log.error(
            "refusing model %s: %s; still serving %s (not retried until the version changes)",
            version,
            exc,
            serving,
        )
        for listener in self.failure_listeners:
            listener(version, str(exc))

    def _swap(self, model: ServingModel) -> None:
        old = self._serving
        if old is not None:
            self.previous_spectrum = old.spectrum
        else:
            self.previous_spectrum = self._previous_from_registry(model.version)
        self._serving = model  # the one atomic switch
        self.failed.pop(model.version, None)
        self._failed_keys.pop(model.version, None)
        log.info(
            "serving model %s (%d users, %d items, %s %s index %s, %s, built in %.2fs)",
            model.version,
            model.arrays.n_users,
            model.arrays.n_items,
            model.index.kind,
            model.index.backend,
            "from the artifact" if model.index.source == "artifact" else "built at load",
            f"top-{model.top_lists.k} lists" if model.top_lists is not None else "no top lists",
            model.build_seconds,
        )
        for listener in self.listeners:
            try:
                listener(model)
            except Exception:
                log.exception("model listener failed")

    def _previous_from_registry(self, version: str) -> SpectrumSnapshot | None:
        """At startup there is no old model in memory: the registry's previous one, from its
        manifest when that holds the whole spectrum (as the trainer writes it), else
        computed from its arrays."""
        prev = self.registry.pointer()["previous"]
        if not prev or prev == version:
            return None
        try:
            stored = SpectrumSnapshot.stored(self.registry.manifest(prev), prev)
            if stored is not None:
                return stored
            loaded = self.registry.load(prev)
        except (ArtifactInvalid, ModelNotFound) as e:
            log.warning("previous model %s unavailable for /health/spectrum: %s", prev, e)
            return None
        return SpectrumSnapshot.of(loaded, prev)


class ModelWatcher:
    """Polls the registry every `interval_s` seconds on a daemon thread; stop() joins it."""

    def __init__(self, state: ModelState, interval_s: float) -> None:
        self.state = state
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="specrec-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("model watcher still busy after %.0fs (loading a model)", timeout)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.state.sync()
            except Exception:  # keep watching whatever happens (e.g. a registry on a flaky disk)
                log.exception("model watcher poll failed")
            self.polls += 1
            self._stop.wait(self.interval_s)
