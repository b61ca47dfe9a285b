"""faiss, an optional dependency: the ``cpu`` extra (faiss-cpu) or the ``gpu`` extra
(faiss-gpu-cu12), never both.

Both wheels ship the same ``faiss`` module and break it when installed together (measured with
faiss-cpu 1.15.1 and faiss-gpu-cu12 1.14.1: the GPU build's Python layer over the CPU build's
``_swigfaiss.abi3.so``, which Python prefers, fails at import), so neither is a base
dependency and ``pip install 'specrec[gpu]'`` brings faiss-gpu alone. Without faiss, search is
exact (numpy), no approximate index is chosen at publish, and whatever needs faiss says what to
install (``require``). Callers read ``faisslib.faiss`` at call time, so tests can take it away.
"""

from __future__ import annotations

from types import ModuleType

INSTALL = "pip install 'specrec[cpu]', or 'specrec[gpu]' on a CUDA machine (not both)"

faiss: ModuleType | None
IMPORT_ERROR: str | None = None
"""Why faiss is not available here (None: it is)."""
try:
    import faiss
except ImportError:
    faiss = None
    IMPORT_ERROR = f"faiss is not installed: {INSTALL}"
except Exception as e:  # an install that imports but breaks, e.g. faiss-cpu and faiss-gpu both
    faiss = None
    IMPORT_ERROR = (
        f"faiss is installed but does not import ({type(e).__name__}: {e}); faiss-cpu and "
        "faiss-gpu installed together do this: pip uninstall -y faiss-cpu faiss-gpu-cu12, "
        f"then {INSTALL}"
    )


class FaissUnavailable(RuntimeError):
    """Something that needs faiss was asked for where faiss does not import."""


def require(what: str) -> ModuleType:
    """The faiss module; raises FaissUnavailable naming `what` and the fix when it is absent."""
    if faiss is None:
        raise FaissUnavailable(f"{what} needs faiss. {IMPORT_ERROR}")
    return faiss
