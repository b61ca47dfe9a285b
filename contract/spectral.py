"""The training-free spectral filter (GF-CF family): its arrays and its scores.

The trainer fits it (trainer/spectral.py: one truncated SVD) and evaluates it with these
scores; the service answers with the very same scores (service/filter_model.py). numpy and
scipy only.

Notation (docs/method.md#the-spectral-filter): R is the binary users × items training matrix
(m × n), d_u its row sums, d_i its column sums, R̃ = D_U^-1/2 R D_I^-1/2 (a zero degree gives
a zero scale). V̄ (n × K) holds the top-K right singular vectors of R̃. A user (or any item
history) with binary row r (1 × n) scores

    s(r) = r R̃ᵀ R̃  +  α · (r D_I^-1/2 V̄) (D_I^+1/2 V̄)ᵀ

the normalised item-item (linear) filter plus α times the ideal low-pass filter. Both are
linear in r, so a history folded in at serving time scores exactly like the same row trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from contract.artifact import ModelArrays

DENSE_FROM_ROWS = 8
"""From this many histories in one call, the linear part multiplies a dense (B, m) block by R̃
(one pass over R̃ for the whole block); below it, each product stays sparse."""


def inverse_sqrt(degrees: np.ndarray) -> np.ndarray:
    """degrees^-1/2 with 0 for a zero degree, shape kept, float32."""
    d = np.asarray(degrees, dtype=np.float64)
    out = np.zeros_like(d)
    np.power(d, -0.5, out=out, where=d > 0)
    return out.astype(np.float32)


def normalized_matrix(train: sp.csr_matrix | sp.csr_array) -> sp.csr_matrix:
    """R̃ = D_U^-1/2 R D_I^-1/2 of a binary (m, n) matrix, float32 CSR, sorted indices."""
    r = sp.csr_matrix(train, dtype=np.float32, copy=True)
    r.sum_duplicates()
    r.data[:] = 1.0
    du = np.diff(r.indptr)
    di = np.bincount(r.indices, minlength=r.shape[1])
    r.data *= np.repeat(inverse_sqrt(du), du)  # row scale
    r.data *= inverse_sqrt(di)[r.indices]  # column scale
    r.sort_indices()
    return r


def item_degrees(norm: sp.csr_matrix) -> np.ndarray:
    """Training interactions per item, read off R̃'s sparsity pattern: (n,) int64."""
    return np.bincount(norm.indices, minlength=norm.shape[1]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class SpectralFilter:
    """A fitted filter, ready to score item histories.

    norm: R̃ (m, n) float32 CSR; norm_t: R̃ᵀ (n, m) CSR (the same numbers, for r R̃ᵀ);
    lowpass_in: (n, K) float32, α D_I^-1/2 V̄; lowpass_out: (n, K) float32, D_I^1/2 V̄;
    singular_values: (K,) float32, descending (the spectrum of R̃ the low-pass part keeps).
    """

    norm: sp.csr_matrix
    norm_t: sp.csr_matrix
    lowpass_in: np.ndarray
    lowpass_out: np.ndarray
    singular_values: np.ndarray
    alpha: float

    @classmethod
    def build(
        cls,
        norm: sp.csr_matrix,
        vectors: np.ndarray,
        singular_values: np.ndarray,
        alpha: float,
    ) -> SpectralFilter:
        """From R̃ (m, n), its top-K right singular vectors V̄ (n, K) and their values (K,)."""
        if vectors.ndim != 2 or vectors.shape[0] != norm.shape[1]:
            raise ValueError(f"vectors {vectors.shape} do not match R̃ {norm.shape}")
        di = item_degrees(norm).astype(np.float64)
        v = np.asarray(vectors, dtype=np.float64)
        inv = inverse_sqrt(di).astype(np.float64)[:, None]
        return cls(
            norm=norm,
            norm_t=norm.T.tocsr(),
            lowpass_in=np.ascontiguousarray(alpha * inv * v, dtype=np.float32),
            lowpass_out=np.ascontiguousarray(np.sqrt(di)[:, None] * v, dtype=np.float32),
            singular_values=np.asarray(singular_values, dtype=np.float32),
            alpha=float(alpha),
        )

    @classmethod
    def from_factors(
        cls,
        norm: sp.csr_matrix,
        lowpass_out: np.ndarray,
        singular_values: np.ndarray,
        alpha: float,
    ) -> SpectralFilter:
        """From the published form: R̃ and D_I^1/2 V̄ (the artifact's item vectors)."""
        di = item_degrees(norm).astype(np.float64)
        out = np.asarray(lowpass_out, dtype=np.float32)
        scale = np.zeros_like(di)
        np.divide(alpha, di, out=scale, where=di > 0)  # α D_I^-1/2 V̄ = α D_I^-1 (D_I^1/2 V̄)
        return cls(
            norm=norm,
            norm_t=norm.T.tocsr(),
            lowpass_in=np.ascontiguousarray(scale[:, None] * out, dtype=np.float32),
            lowpass_out=np.ascontiguousarray(out),
            singular_values=np.asarray(singular_values, dtype=np.float32),
            alpha=float(alpha),
        )

    @classmethod
    def of_arrays(cls, arrays: ModelArrays, alpha: float) -> SpectralFilter:
        """The filter a spectral or blend artifact carries (``arrays.kind``; its low-pass
        weight `alpha` is the manifest's ``model.spectral_alpha``)."""
        lowpass = arrays.lowpass
        if lowpass is None or arrays.filter_singular_values is None:
            raise ValueError("not a spectral-filter model: it has no filter arrays")
        norm = sp.csr_matrix(
            (arrays.filter_data, arrays.filter_indices, arrays.filter_indptr),
            shape=(arrays.n_users, arrays.n_items),
        )
        return cls.from_factors(norm, lowpass, arrays.filter_singular_values, alpha)

    @property
    def n_users(self) -> int:
        return int(self.norm.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.norm.shape[1])

    @property
    def rank(self) -> int:
        return int(self.lowpass_out.shape[1])

    def user_factors(self, histories: sp.csr_matrix) -> np.ndarray:
        """r D_I^-1/2 V̄ · α of each history: (B, K) float32, the low-pass part's user side."""
        return np.asarray(histories @ self.lowpass_in, dtype=np.float32)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        """s(r) of each row of `histories` (B, n) (binary item histories): (B, n) float32."""
        h = sp.csr_matrix(histories, dtype=np.float32)
        if h.shape[1] != self.n_items:
            raise ValueError(f"histories have {h.shape[1]} columns, the filter {self.n_items}")
        hop = h @ self.norm_t  # (B, m): r R̃ᵀ, sparse
        if h.shape[0] >= DENSE_FROM_ROWS:
            dense = np.ascontiguousarray(hop.toarray().T)  # (m, B)
            out = np.ascontiguousarray((self.norm_t @ dense).T)  # (B, n)
        else:
            out = (hop @ self.norm).toarray()
        out += self.user_factors(h) @ self.lowpass_out.T
        return out.astype(np.float32, copy=False)

    def item_scores(self, items: np.ndarray) -> np.ndarray:
        """s(e_i) for each item row in `items`: (len(items), n), item-item similarities."""
        rows = np.asarray(items, dtype=np.int64)
        onehot = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (np.arange(len(rows)), rows)),
            shape=(len(rows), self.n_items),
        )
        return self.scores(onehot)

    def response(self) -> dict[str, list[float]]:
        """The filter's frequency response over R̃'s kept spectrum: for the k-th singular
        value σ_k, the linear part passes σ_k² and the ideal low-pass adds α (normalised to
        the top frequency)."""
        s = self.singular_values.astype(np.float64)
        top = float(s[0]) if len(s) and s[0] > 0 else 1.0
        lin = (s / top) ** 2
        return {
            "singular_values": s.tolist(),
            "linear": lin.tolist(),
            "total": (lin + self.alpha).tolist(),
        }


def histories_matrix(histories: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary (B, n) float32 CSR with row b = the (unique) item rows of histories[b]."""
    lengths = np.asarray([len(h) for h in histories], dtype=np.int64)
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = (
        np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
        if len(histories)
        else np.empty(0, np.int64)
    )
    mat = sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, indptr), shape=(len(histories), n_items)
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat
