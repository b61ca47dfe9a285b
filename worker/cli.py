"""``specrec-worker``: bootstrap a default model, then run retrain jobs until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import worker
from worker.bootstrap import bootstrap
from worker.loop import serve_forever
from worker.settings import LOG_FORMAT, WorkerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specrec-worker", description=worker.__doc__)
    parser.add_argument(
        "--bootstrap-only",
        action="store_true",
        help="create the default dataset/model if missing, then exit",
    )
    parser.add_argument(
        "--no-bootstrap", action="store_true", help="skip the bootstrap and only process jobs"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    settings = WorkerSettings()
    if not args.no_bootstrap:
        bootstrap(settings)
    if args.bootstrap_only:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve_forever(settings, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
