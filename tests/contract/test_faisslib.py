"""faiss is optional (the cpu or the gpu extra): where it does not import, the reason is told
apart (absent, or a broken install such as faiss-cpu and faiss-gpu together), the publisher
chooses exact search saying why, the service searches exactly (also when the artifact ships an
index), and settings that need faiss are refused at startup with what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from contract import annindex, faisslib
from contract.manifest import IndexInfo, IndexParams
from service.index import (
    NumpyExactIndex,
    ShippedIndex,
    build_index,
    check_faiss,
    set_search_threads,
)
from service.settings import IndexSettings

REPO = Path(__file__).resolve().parents[2]


def import_error_with(tmp_path: Path, faiss_init: str | None) -> str:
    """faisslib.IMPORT_ERROR in a fresh interpreter where `import faiss` finds a package whose
    __init__ is `faiss_init`, or (None) finds nothing."""
    site = tmp_path / "site"
    site.mkdir()
    if faiss_init is None:
        (site / "sitecustomize.py").write_text("import sys\nsys.modules['faiss'] = None\n")
    else:
        (site / "faiss").mkdir()
        (site / "faiss" / "__init__.py").write_text(faiss_init)
    code = (
        "from contract import faisslib; print(faisslib.faiss is None); print(faisslib.IMPORT_ERROR)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "True"
    return out[1]


def test_an_absent_faiss_says_what_to_install(tmp_path) -> None:
    message = import_error_with(tmp_path, None)
    assert message == f"faiss is not installed: {faisslib.INSTALL}"
    assert "specrec[cpu]" in message and "specrec[gpu]" in message


def test_a_broken_faiss_is_told_apart(tmp_path) -> None:
    # what faiss-gpu-cu12's Python layer over faiss-cpu's binary raised, measured
    init = "raise AttributeError(\"module 'faiss._swigfaiss' has no attribute 'x'\")\n"
    message = import_error_with(tmp_path, init)
    assert message.startswith("faiss is installed but does not import (AttributeError: ")
    assert "pip uninstall -y faiss-cpu faiss-gpu-cu12" in message


@pytest.fixture
def no_faiss(monkeypatch) -> str:
    reason = f"faiss is not installed: {faisslib.INSTALL}"
    monkeypatch.setattr(faisslib, "faiss", None)
    monkeypatch.setattr(faisslib, "IMPORT_ERROR", reason)
    return reason


def test_require_names_what_needs_faiss(no_faiss) -> None:
    with pytest.raises(faisslib.FaissUnavailable) as e:
        faisslib.require("an IVF index")
    assert str(e.value) == f"an IVF index needs faiss. {no_faiss}"
    with pytest.raises(faisslib.FaissUnavailable):
        annindex.build_ivf(np.ones((50, 4), np.float32), 2)
    with pytest.raises(faisslib.FaissUnavailable):
        annindex.load_index(np.zeros(8, np.uint8))
    assert annindex.search_parameters("flat", 20, nprobe=None, ef_search=None) is None
    set_search_threads(2)  # no faiss: nothing to set, no error


def test_the_publisher_chooses_exact_search_and_says_why(no_faiss) -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    choice = annindex.choose_index(items, items[:20], 0.95, small_catalogue=100)
    assert choice.index is None
    assert choice.info.kind == "flat"
    assert choice.info.reason == f"exact search: no index can be built here ({no_faiss})"


def test_the_service_searches_exactly_when_the_shipped_index_cannot_load(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    ivf = annindex.build_ivf(items, 32)  # faiss is here: a real shipped index
    info = IndexInfo(kind="ivf", params=IndexParams(nlist=32, nprobe=4), target=0.95, recall=0.96)
    shipped = ShippedIndex(info, annindex.serialize_index(ivf))
    monkeypatch.setattr(faisslib, "faiss", None)
    monkeypatch.setattr(faisslib, "IMPORT_ERROR", "faiss is not installed: test")
    index = build_index(items, IndexSettings(), shipped)
    assert isinstance(index, NumpyExactIndex)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    banned = [np.arange(3)] * 5
    got = index.search(queries, [10] * 5, banned)
    scores = queries @ items.T
    scores[:, :3] = -np.inf
    for (rows, _), row_scores in zip(got, scores, strict=True):
        np.testing.assert_array_equal(rows, np.argsort(-row_scores, kind="stable")[:10])


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"index_kind": "ivf"}, "SPECREC_INDEX_KIND=ivf"),
        ({"index_kind": "hnsw"}, "SPECREC_INDEX_KIND=hnsw"),
        ({"index_kind": "flat", "exact_backend": "faiss"}, "SPECREC_EXACT_BACKEND=faiss"),
        ({"use_gpu": True}, "SPECREC_USE_GPU=true"),
    ],
)
def test_settings_that_need_faiss_are_refused_at_startup(no_faiss, settings, named) -> None:
    with pytest.raises(faisslib.FaissUnavailable) as e:
        check_faiss(IndexSettings(**settings))
    assert str(e.value) == f"{named} needs faiss. {no_faiss}"


def test_default_settings_need_no_faiss(no_faiss) -> None:
    check_faiss(IndexSettings())
    check_faiss(IndexSettings(index_kind="flat", exact_backend="numpy"))


def test_the_app_refuses_to_start_with_them(no_faiss, tmp_path) -> None:
    from service.app import create_app
    from service.settings import Settings

    with pytest.raises(faisslib.FaissUnavailable, match="SPECREC_INDEX_KIND=hnsw needs faiss"):
        create_app(Settings(home=tmp_path, index_kind="hnsw"))
    assert create_app(Settings(home=tmp_path)).title == "specrec"


def test_a_gpu_index_without_faiss_gpu_is_refused_at_startup(monkeypatch) -> None:
    from service import index as index_module

    monkeypatch.setattr(index_module, "HAS_FAISS_GPU", False)  # faiss-cpu, or no visible GPU
    with pytest.raises(faisslib.FaissUnavailable) as e:
        check_faiss(IndexSettings(use_gpu=True))
    assert "pip install 'specrec[gpu]'" in str(e.value)
    check_faiss(IndexSettings(use_gpu=False))
