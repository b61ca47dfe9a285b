"""``specrec-serve`` / ``python -m service.main``: run the API under uvicorn.

``SPECREC_WORKERS`` > 1 runs that many worker processes on one port (uvicorn's supervisor
restarts one that dies); each builds its app from the same environment (``app_from_env``).
"""

from __future__ import annotations

import logging
import os
import signal

from fastapi import FastAPI

from service.settings import Settings, search_threads_env


def _configure(settings: Settings) -> None:
    # Cap BLAS/OpenMP pools before numpy and faiss load: searches already run concurrently.
    os.environ.update(search_threads_env(settings.faiss_threads))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def app_from_env() -> FastAPI:
    """The app of one worker process, configured from the environment (uvicorn factory)."""
    settings = Settings()
    _configure(settings)
    from service.app import create_app

    return create_app(settings)


def main() -> None:
    """Read Settings from the environment and serve until interrupted."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if started ignoring it
    settings = Settings()
    _configure(settings)
    import uvicorn

    if settings.workers > 1:
        app: str | FastAPI = "service.main:app_from_env"  # each worker builds its own
    else:
        from service.app import create_app

        app = create_app(settings)
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
