"""Top-k search backends against an independent brute force (numpy argsort of U @ I.T)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.annindex import default_nlist
from service.index import FaissIndex, NumpyExactIndex, build_index
from service.settings import IndexSettings
from service.topk import filter_ranked, select_topk


def brute_force(q: np.ndarray, items: np.ndarray, k: int, banned: set[int]) -> list[int]:
    """Exact top-k rows: float64 scores, banned removed, ties by row (stable argsort)."""
    scores = items.astype(np.float64) @ q.astype(np.float64)
    ranked = [r for r in np.argsort(-scores, kind="stable").tolist() if r not in banned]
    return ranked[:k]


def assert_valid_topk(rows, scores, q, items, k, banned: set[int]) -> None:
    """A correct top-k whatever the tie-breaking: right length, nothing banned, scores equal to
    the true inner products, sorted (score desc, row asc), and nothing better left out."""
    true = items.astype(np.float64) @ q.astype(np.float64)
    allowed = [r for r in range(len(items)) if r not in banned]
    assert len(rows) == min(k, len(allowed))
    assert not set(rows.tolist()) & banned
    assert len(set(rows.tolist())) == len(rows)
    np.testing.assert_allclose(scores, true[rows], rtol=1e-5, atol=1e-5)
    for a, b in zip(range(len(rows) - 1), range(1, len(rows)), strict=True):
        assert scores[a] > scores[b] or (scores[a] == scores[b] and rows[a] < rows[b])
    left_out = sorted(set(allowed) - set(rows.tolist()))
    if len(rows) and left_out:
        assert true[left_out].max() <= true[rows].min() + 1e-5


def test_select_topk_on_a_hand_worked_vector():
    scores = np.asarray([0.1, 0.9, 0.5, 0.9, 0.3, 0.7], dtype=np.float32)
    rows, vals = select_topk(scores.copy(), 3, np.asarray([5]))
    # 0.9 at rows 1 and 3 (tie -> lower row first), then 0.5 (0.7 at row 5 is banned)
    assert rows.tolist() == [1, 3, 2]
    np.testing.assert_array_equal(vals, np.float32([0.9, 0.9, 0.5]))


def test_select_topk_k_larger_than_allowed_returns_everything_allowed():
    scores = np.asarray([3.0, 1.0, 2.0], dtype=np.float32)
    rows, _ = select_topk(scores, 10, np.asarray([1]))
    assert rows.tolist() == [0, 2]
    rows, _ = select_topk(np.ones(2, np.float32), 5, np.asarray([0, 1]))
    assert rows.tolist() == []


def test_filter_ranked_drops_padding_and_banned_keeps_order():
    rows = np.asarray([7, 2, 9, -1, -1])
    scores = np.asarray([5.0, 4.0, 4.0, -3e38, -3e38], dtype=np.float32)
    out_rows, out_scores = filter_ranked(rows, scores, 2, np.asarray([7]))
    assert out_rows.tolist() == [2, 9]
    assert out_scores.tolist() == [4.0, 4.0]


BACKENDS = {
    "numpy": lambda items: NumpyExactIndex(items, buffer_mb=1),
    "faiss-flat": lambda items: FaissIndex(items, IndexSettings(index_kind="flat", use_gpu=False)),
}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_exact_backends_equal_brute_force_with_seen_masked(backend):
    rng = np.random.default_rng(1)
    items = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    banned = [np.unique(rng.choice(300, size=rng.integers(0, 60), replace=False)) for _ in queries]
    ks = [int(k) for k in rng.integers(1, 40, size=len(queries))]
    index = BACKENDS[backend](items)
    results = index.search(queries, ks, banned)
    for q, k, b, (rows, scores) in zip(queries, ks, banned, results, strict=True):
        assert rows.tolist() == brute_force(q, items, k, set(b.tolist()))
        assert_valid_topk(rows, scores, q, items, k, set(b.tolist()))


def test_numpy_backend_chunks_queries_beyond_its_buffer():
    rng = np.random.default_rng(2)
    items = rng.standard_normal((50_000, 4)).astype(np.float32)
    index = NumpyExactIndex(items, buffer_mb=1)  # 1 MiB / (4 B * 50k) = 5 rows per chunk
    assert index.chunk == 5
    queries = rng.standard_normal((12, 4)).astype(np.float32)
    results = index.search(queries, [3] * 12, [np.empty(0, np.int64)] * 12)
    assert [r.tolist() for r, _ in results] == [brute_force(q, items, 3, set()) for q in queries]


@st.composite
def search_case(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    # small integer embeddings -> many exact ties, the hard case for ordering
    items = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    q = rng.integers(-2, 3, size=d).astype(np.float32)
    banned = draw(st.sets(st.integers(0, n - 1), max_size=n))
    k = draw(st.integers(1, 50))
    return items, q, k, banned


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=search_case())
def test_property_topk_is_sorted_complete_and_excludes_banned(backend, case):
    items, q, k, banned = case
    index = BACKENDS[backend](items)
    b = np.asarray(sorted(banned), dtype=np.int64)
    ((rows, scores),) = index.search(q[None, :], [k], [b])
    assert_valid_topk(rows, scores, q, items, k, banned)


def recall_at_k(approx: list[np.ndarray], exact: list[np.ndarray]) -> float:
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True))
    return hits / sum(len(e) for e in exact)


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [("ivf", 0.95), ("hnsw", 0.95)],
)
def test_approximate_indexes_recall_against_exact(kind, threshold):
    """IVF/HNSW on 5,000 clustered items: recall@20 of the approximate answer >= threshold."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, 16))
    items = (centres[rng.integers(0, 50, 5000)] + 0.3 * rng.standard_normal((5000, 16))).astype(
        np.float32
    )
    queries = rng.standard_normal((100, 16)).astype(np.float32)
    none = [np.empty(0, np.int64)] * len(queries)
    exact = NumpyExactIndex(items).search(queries, [20] * len(queries), none)
    config = IndexSettings(index_kind=kind, use_gpu=False, ivf_nprobe=8, hnsw_ef_search=128)
    index = build_index(items, config)
    assert not index.exact and index.ntotal == 5000
    approx = index.search(queries, [20] * len(queries), none)
    assert recall_at_k([r for r, _ in approx], [r for r, _ in exact]) >= threshold
    # per-call parameters reach FAISS: a tiny search budget loses recall, a large one gains it
    low = index.search(queries, [20] * len(queries), none, nprobe=1, ef_search=20)
    high = index.search(queries, [20] * len(queries), none, nprobe=index.nlist, ef_search=512)
    low_recall = recall_at_k([r for r, _ in low], [r for r, _ in exact])
    high_recall = recall_at_k([r for r, _ in high], [r for r, _ in exact])
    assert low_recall < threshold <= high_recall
    if kind == "ivf":  # visiting every cell is exact
        assert high_recall == 1.0


def test_approximate_search_still_excludes_banned_rows():
    rng = np.random.default_rng(4)
    items = rng.standard_normal((2000, 8)).astype(np.float32)
    q = items[:5] * 3  # each query's best items include itself
    banned = [np.asarray([i]) for i in range(5)]
    for kind in ("ivf", "hnsw"):
        index = build_index(items, IndexSettings(index_kind=kind, use_gpu=False))
        for i, (rows, _) in enumerate(index.search(q, [10] * 5, banned)):
            assert i not in rows.tolist() and len(rows) == 10


def test_default_nlist_is_about_sqrt_n_with_39_points_per_cell():
    assert default_nlist(1_000_000) == 1000
    assert default_nlist(10_000) == 100
    assert default_nlist(1000) == 25  # 1000 // 39
    assert default_nlist(10) == 1


def test_build_index_auto_is_numpy_on_cpu_and_faiss_when_asked():
    items = np.eye(4, dtype=np.float32)
    assert build_index(items, IndexSettings(use_gpu=False)).backend == "numpy"
    assert (
        build_index(items, IndexSettings(exact_backend="faiss", use_gpu=False)).backend == "faiss"
    )


def test_gpu_request_without_faiss_gpu_says_what_to_install():
    from service import index as index_module

    if index_module.HAS_FAISS_GPU:
        pytest.skip("faiss-gpu with a GPU present")
    with pytest.raises(RuntimeError, match="pip install"):
        FaissIndex(np.eye(4, dtype=np.float32), IndexSettings(index_kind="flat", use_gpu=True))


@pytest.mark.parametrize(("n", "k"), [(50_000, 1), (50_000, 20), (50_000, 100), (40_981, 20)])
def test_select_topk_slice_max_path_equals_a_full_sort(n, k):
    """n >= 64k takes the slice-maximum path: it must equal a full sort (score desc, row asc)
    exactly, ties at the cut and banned rows included, also when 16 does not divide n."""
    rng = np.random.default_rng(k)
    scores = rng.standard_normal(n).astype(np.float32)
    top = rng.choice(n, 300, replace=False)
    scores[top] = scores.max()  # many ties at the top
    scores[n - 3 :] = scores.max()  # ... some in the rows left over after 16 * (n // 16)
    banned = np.unique(np.concatenate([rng.choice(n, 2000, replace=False), top[:50]]))
    rows, vals = select_topk(scores.copy(), k, banned)
    masked = scores.astype(np.float64)
    masked[banned] = -np.inf
    want = np.lexsort((np.arange(n), -masked))[:k]  # score desc, row asc
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(vals, scores[want])
    assert rows.dtype == np.int64 and vals.dtype == np.float32


def test_select_topk_slice_max_path_with_most_of_the_row_banned():
    """Fewer than k slice columns keep an allowed row: the bound is -inf, the full path answers."""
    scores = np.arange(10_000, dtype=np.float32)  # w = 625 columns of 16 rows
    allowed = np.asarray([3, 628, 9378, 7])  # columns 3 (rows 3, 628, 9378) and 7
    banned = np.setdiff1d(np.arange(10_000), allowed)
    rows, vals = select_topk(scores.copy(), 5, banned)
    assert rows.tolist() == [9378, 628, 7, 3]
    assert vals.tolist() == [9378.0, 628.0, 7.0, 3.0]
    rows, _ = select_topk(scores.copy(), 3, np.arange(9985, 10_000))
    assert rows.tolist() == [9984, 9983, 9982]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_the_numpy_reference(kind):
    from service import index as index_module

    if not index_module.HAS_FAISS_GPU:
        pytest.skip("needs faiss-gpu and a CUDA GPU")
    rng = np.random.default_rng(5)
    items = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((50, 32)).astype(np.float32)
    banned = [np.unique(rng.choice(3000, 40, replace=False)) for _ in queries]
    index = FaissIndex(items, IndexSettings(index_kind=kind, use_gpu=True, ivf_nprobe=64))
    assert index.on_gpu and index.backend == "faiss-gpu"
    got = index.search(queries, [20] * 50, banned)
    want = NumpyExactIndex(items).search(queries, [20] * 50, banned)
    if kind == "flat":
        for (r, s), q, b in zip(got, queries, banned, strict=True):
            assert_valid_topk(r, s, q, items, 20, set(b.tolist()))
    else:
        assert recall_at_k([r for r, _ in got], [r for r, _ in want]) >= 0.95
