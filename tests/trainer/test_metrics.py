"""recall_at_k / ndcg_at_k on hand-worked ranked lists (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluate import ndcg_at_k, recall_at_k

LOG2_3 = math.log2(3)  # 1.58496...: discount of rank 2 is 1/log2(3) = 0.63093
LOG2_6 = math.log2(6)  # 2.58496...: discount of rank 5 is 1/log2(6) = 0.38685


def test_recall_fewer_test_items_than_k() -> None:
    # ranked 5 3 9 1 7, T = {3, 7, 8}: hits at ranks 2 and 5
    ranked, rel = np.array([5, 3, 9, 1, 7]), {3, 7, 8}
    # k=5: 2 hits; |T| = 3 <= k, so both conventions divide by 3 -> 2/3
    assert recall_at_k(ranked, rel, 5) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, rel, 5, "reference") == pytest.approx(2 / 3)
    # k=3: top 5 3 9 -> 1 hit; min(3, 3) = 3 -> 1/3 both ways
    assert recall_at_k(ranked, rel, 3) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, rel, 3, "reference") == pytest.approx(1 / 3)


def test_recall_more_test_items_than_k_both_conventions() -> None:
    # T = {1, 2, 3, 4, 5} (5 items), k = 2, top-2 = [1, 9] -> 1 hit
    ranked, rel = np.array([1, 9, 2, 8]), np.array([5, 4, 3, 2, 1])
    assert recall_at_k(ranked, rel, 2, "lightgcn") == pytest.approx(1 / 5)  # 1 / |T| = 0.2
    assert recall_at_k(ranked, rel, 2, "reference") == pytest.approx(1 / 2)  # 1 / min(2, 5)
    # k = 3: top-3 = [1, 9, 2] -> 2 hits: 2/5 = 0.4 vs 2/min(3, 5) = 0.667
    assert recall_at_k(ranked, rel, 3, "lightgcn") == pytest.approx(0.4)
    assert recall_at_k(ranked, rel, 3, "reference") == pytest.approx(2 / 3)


def test_ndcg_hand_worked() -> None:
    # ranked 5 3 9 1 7, T = {3, 7, 8}, k = 5: hits at ranks 2 and 5
    # DCG = 1/log2(3) + 1/log2(6) = 0.63093 + 0.38685 = 1.01778
    # IDCG over min(5, 3) = 3 ranks = 1 + 1/log2(3) + 1/log2(4) = 1 + 0.63093 + 0.5 = 2.13093
    dcg = 1 / LOG2_3 + 1 / LOG2_6
    idcg = 1 + 1 / LOG2_3 + 0.5
    assert ndcg_at_k(np.array([5, 3, 9, 1, 7]), {3, 7, 8}, 5) == pytest.approx(dcg / idcg)
    assert dcg / idcg == pytest.approx(0.47762, abs=1e-5)


def test_ndcg_idcg_uses_min_k_and_test_size() -> None:
    # T has 5 items, k = 2, top-2 = [1, 9]: DCG = 1/log2(2) = 1
    # IDCG over min(2, 5) = 2 ranks = 1 + 1/log2(3) = 1.63093 -> NDCG = 0.61315
    rel = {1, 2, 3, 4, 5}
    assert ndcg_at_k(np.array([1, 9, 2, 8]), rel, 2) == pytest.approx(1 / (1 + 1 / LOG2_3))
    # a perfect top-2 scores exactly 1 although 3 test items are not retrieved
    assert ndcg_at_k(np.array([4, 2, 9]), rel, 2) == pytest.approx(1.0)
    # hit only at rank 2: DCG = 0.63093 -> 0.63093 / 1.63093 = 0.38685
    assert ndcg_at_k(np.array([9, 2]), rel, 2) == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))


def test_short_ranked_list_and_no_hits() -> None:
    # only one candidate left for this user and k = 20: it is the single test item
    assert recall_at_k(np.array([4]), {4}, 20) == 1.0
    assert recall_at_k(np.array([4]), {4}, 20, "reference") == 1.0  # 1 / min(20, 1)
    assert ndcg_at_k(np.array([4]), {4}, 20) == pytest.approx(1.0)  # IDCG over min(20, 1)
    assert recall_at_k(np.array([0, 1, 2]), {7, 8}, 3) == 0.0
    assert ndcg_at_k(np.array([0, 1, 2]), {7, 8}, 3) == 0.0


def test_relevant_array_duplicates_count_once() -> None:
    # T given as an array with a repeat is the set {2, 6}: 1 hit of 2
    assert recall_at_k(np.array([2, 3]), np.array([2, 6, 6]), 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "kwargs", "message"),
    [
        ([1, 2], set(), 2, {}, "relevant is empty"),
        ([1, 2], {1}, 0, {}, "k must be >= 1"),
        ([1, 1, 2], {1}, 3, {}, "duplicate items"),
        ([1, 2], {1}, 2, {"convention": "other"}, "unknown recall convention"),
    ],
)
def test_invalid_arguments(ranked, relevant, k, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at_k(np.array(ranked), relevant, k, **kwargs)
