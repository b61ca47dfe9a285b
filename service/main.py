"""``specrec-serve`` / ``python -m service.main``: run the API under uvicorn (one worker)."""

from __future__ import annotations

import logging
import os

from service.settings import Settings, search_threads_env


def main() -> None:
    """Read Settings from the environment and serve until interrupted."""
    settings = Settings()
    # Cap BLAS/OpenMP pools before numpy and faiss load: searches already run concurrently.
    os.environ.update(search_threads_env(settings.faiss_threads))
    import uvicorn

    from service.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
