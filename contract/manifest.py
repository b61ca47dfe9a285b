"""The manifest of a model artifact (``manifest.json``), as a typed model.

The trainer writes it (contract.artifact: ``ModelRegistry.publish``), the service and the worker
read it through :class:`Manifest`, never by string keys. Every part is tolerant of keys it does
not name (``extra="allow"``, kept on a round trip), so artifacts written by older or newer code
still load; parts an older artifact lacks have defaults. On disk::

    {"format_version": 1, "version": "v...", "created_at": "2026-...Z", "created_unix": 1.7e9,
     "dataset": "default", "dataset_fingerprint": "...",
     "shape": {"n_users": m, "n_items": n, "dim": d, "n_seen": nnz},
     "config": TrainConfig.to_dict(), "metrics": {"recall@20": ..., "n_users": ...},
     "spectrum": embedding_spectrum(U, I),
     "training": {"history": [...], "epochs_run": ..., "device": ..., "distributed": ...,
                  "refit": {"epochs_run": ..., ...}},      (history, metrics: the evaluation run)
     "trained_on": {"pairs": "all" | "train", "n_pairs": ..., "epochs": ...,
                    "evaluated_on": {"train_pairs": ..., "test_pairs": ...}},
     "ingested": {"rows": r, "max_seq": s},            (worker-trained models only)
     "index": {"kind": "flat" | "ivf" | "hnsw", "params": {...}, "target": 0.95,
               "recall": ..., "p50_ms": ..., "exact_p50_ms": ..., "reason": ...,
               "candidates": [...]},                  (embedding models; contract.annindex)
     "files": {"user_emb.npy": {"sha256": ..., "bytes": ...}, ...}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Part(BaseModel):
    """A manifest part: frozen, and keeps the keys it does not name."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """The part as it was read (no defaults added for keys it lacked)."""
        return self.model_dump(exclude_unset=True, by_alias=True)


class Shape(_Part):
    """The arrays' sizes (checked against the arrays when the artifact is read)."""

    n_users: int
    n_items: int
    dim: int
    n_seen: int | None = None
    """Training interactions (``len(seen_indices)``)."""


class RecordedConfig(_Part):
    """The training config a model was trained with (``TrainConfig.to_dict()``); the fields the
    service reads are named, the others kept as they are."""

    objective: str | None = None
    encoder: str | None = None
    """``mf`` or ``lightgcn``; how the service folds a history into a user vector."""


class SpectrumStats(_Part):
    """``contract.spectrum.spectrum_stats`` of one matrix (any field may be missing in an
    older artifact)."""

    dim: int | None = None
    singular_values: list[float] | None = None
    singular_values_normalized: list[float] | None = None
    effective_rank: float | None = None
    effective_rank_ratio: float | None = None
    stable_rank: float | None = None
    condition_number: float | None = None
    top1_energy: float | None = None
    top10_energy: float | None = None


class SideSpectrum(_Part):
    raw: SpectrumStats | None = None
    normalized: SpectrumStats | None = None
    """Of the row-L2-normalised embeddings (the collapse measure)."""


class Spectrum(_Part):
    """``contract.spectrum.embedding_spectrum(U, I)``: users, items and both stacked."""

    users: SideSpectrum | None = None
    items: SideSpectrum | None = None
    all: SideSpectrum | None = None

    def is_full(self) -> bool:
        """Whether every part has what /health/spectrum reads (else the service recomputes)."""
        for side in (self.users, self.items, self.all):
            if side is None:
                return False
            for stats in (side.raw, side.normalized):
                if stats is None or None in (
                    stats.singular_values_normalized,
                    stats.effective_rank,
                    stats.effective_rank_ratio,
                ):
                    return False
        return True

    def effective_rank(self) -> dict[str, float]:
        """Normalised effective rank of ``users`` and ``items``, for the sides that have one."""
        out = {}
        for name, side in (("users", self.users), ("items", self.items)):
            value = side.normalized.effective_rank if side and side.normalized else None
            if value is not None:
                out[name] = value
        return out


class Ingested(_Part):
    """Which ingested interactions (FeedbackStore rows) a worker-trained model includes."""

    rows: int = 0
    max_seq: int = 0
    """The highest feedback ``seq`` included: rows above it are newer than the model."""

    @field_validator("max_seq", mode="before")
    @classmethod
    def _seq(cls, value: Any) -> Any:
        """The one rule for a trained seq: a non-negative integer (not a bool), else 0."""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        return 0


class Training(_Part):
    """How the training run went (trainer.train.publish_result)."""

    history: list[dict[str, Any]] = []
    seconds_per_epoch: float | None = None
    device: str | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    stopped_early: bool | None = None
    torch_version: str | None = None
    distributed: dict[str, Any] | None = None
    """``world_size``, ``backend``, ``devices`` of a data-parallel run; None otherwise."""
    refit: dict[str, Any] | None = None
    """``epochs_run``, ``seconds_per_epoch``, ``device`` of the refit on every pair, when the
    published embeddings are one (the rest of this part is the evaluation run's)."""


class EvaluatedOn(_Part):
    """The split the evaluation run (the manifest's ``metrics``) was trained and scored on."""

    train_pairs: int
    test_pairs: int


class TrainedOn(_Part):
    """Which pairs the published embeddings were fitted on (trainer.refit)."""

    pairs: Literal["all", "train"]
    """"all": refitted on every pair, train and test, after the evaluation run; "train": the
    evaluation run itself (fitted on ``evaluated_on.train_pairs`` only)."""
    n_pairs: int
    epochs: int
    """Epochs of the published fit."""
    evaluated_on: EvaluatedOn

    @classmethod
    def counted(
        cls,
        pairs: Literal["all", "train"],
        n_pairs: int,
        epochs: int,
        train_pairs: int,
        test_pairs: int,
    ) -> TrainedOn:
        return cls(
            pairs=pairs,
            n_pairs=n_pairs,
            epochs=epochs,
            evaluated_on=EvaluatedOn(train_pairs=train_pairs, test_pairs=test_pairs),
        )


class ModelInfo(_Part):
    """What kind of model the arrays hold (contract/artifact.py): "embedding" (user and item
    vectors), "spectral" (the GF-CF filter, contract/spectral.py, with its parameters) or
    "blend" (DirectSpec+ and the filter, contract/blend.py, with the weight)."""

    kind: str = "embedding"
    spectral_k: int | None = None
    spectral_alpha: float = 0.0
    """The low-pass weight α (the service rebuilds the filter with it)."""
    blend_weight: float | None = None
    """β of a blend: z(filter) + β · z(DirectSpec+)."""
    blend_selection: dict[str, Any] | None = None
    """How β was chosen on validation (trainer.blend.WeightChoice); None: it was given."""
    top_k: int | None = None
    """Length of the per-user lists the artifact carries (None: none)."""


class IndexParams(_Part):
    """Parameters of an item index (contract.annindex): IVF's ``nlist`` / ``nprobe`` or
    HNSW's ``m`` / ``ef_construction`` / ``ef_search``; none for ``flat``."""

    nlist: int | None = None
    nprobe: int | None = None
    m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None


class IndexCandidate(_Part):
    """One setting measured while choosing the index (contract.annindex.choose_index)."""

    kind: str
    params: IndexParams = Field(default_factory=IndexParams)
    recall: float
    """Recall@k against exact search on the held-out queries."""
    p50_ms: float
    p99_ms: float
    """Single-query latency on one thread, milliseconds."""


class IndexInfo(_Part):
    """The item index chosen at publish (contract.annindex.choose_index): ``kind`` "flat"
    (exact search, no index file) or "ivf" / "hnsw" (shipped as ``item_index.npy``), what it
    was measured at on held-out queries, and why it was chosen."""

    kind: Literal["flat", "ivf", "hnsw"]
    params: IndexParams = Field(default_factory=IndexParams)
    target: float
    """The recall target (``SPECREC_INDEX_RECALL``)."""
    k: int = 20
    recall: float | None = None
    """Recall@k of the chosen setting (1.0 for flat when measured; None: nothing measured)."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    exact_p50_ms: float | None = None
    """Exact numpy search's single-query median on the same queries (one thread)."""
    n_queries: int = 0
    build_s: float | None = None
    """Seconds to build the chosen index (None: flat)."""
    reason: str = ""
    candidates: list[IndexCandidate] = []


class FileEntry(_Part):
    sha256: str
    bytes: int


class Manifest(_Part):
    """``manifest.json`` of one published model."""

    format_version: int = 1
    version: str | None = None
    """The version name it was published as (the registry's directory name may differ)."""
    created_at: str | None = None
    """ISO 8601 UTC."""
    created_unix: float | None = None
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    shape: Shape | None = None
    config: RecordedConfig = Field(default_factory=RecordedConfig)
    metrics: dict[str, float | int] = {}
    """Test metrics (``recall@K``, ``ndcg@K``, ``n_users``)."""
    spectrum: Spectrum = Field(default_factory=Spectrum)
    training: Training | None = None
    trained_on: TrainedOn | None = None
    """Which pairs the embeddings saw; None: an older model, fitted on its training pairs.
    The seen set (contract.artifact) is every pair, train and test, either way."""
    ingested: Ingested | None = None
    model: ModelInfo = Field(default_factory=ModelInfo)
    selection: dict[str, Any] | None = None
    """How an ``auto`` job or the bootstrap chose this model: ``{"winner", "metric",
    "validation": {objective: score}, "reason", "split"}`` (trainer.select); None otherwise."""
    index: IndexInfo | None = None
    """The item index chosen at publish for an embedding model (None: an older model, a
    filter or blend, or a publish that skipped the choice): the service searches the shipped
    index (``item_index.npy``) when it is not flat."""
    files: dict[str, FileEntry] = {}
    """``<array>.npy`` -> checksum and size of the bytes written."""

    @property
    def trained_seq(self) -> int:
        """The highest feedback seq the model was trained on (0: none, e.g. a bootstrap or
        specrec-train model)."""
        return self.ingested.max_seq if self.ingested is not None else 0


def parse_manifest(data: Any) -> Manifest:
    """``data`` (a parsed manifest.json) as a Manifest; raises ValueError naming what is
    wrong."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"invalid manifest: {problems}") from e
