#!/usr/bin/env python3
"""Container health checks, standard library only (the slim image has no curl).

    healthcheck.py ready   exit 0 iff GET http://127.0.0.1:$PORT/readyz answers 200 (the api)
    healthcheck.py model   exit 0 iff the registry's CURRENT ($SPECREC_MODELS_DIR, default
                           $SPECREC_HOME/models) names a published version directory (the
                           trainer: its bootstrap has published a model)

Exit 1 otherwise, with one line on stderr saying why (docker shows it in `docker inspect`).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def check_ready(port: str, timeout_s: float = 3.0) -> str | None:
    """None when /readyz answers 200, else the reason."""
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return None if resp.status == 200 else f"{url} answered {resp.status}"
    except urllib.error.HTTPError as e:
        return f"{url} answered {e.code}"
    except OSError as e:
        return f"{url} unreachable: {e}"


def check_model(models_dir: Path) -> str | None:
    """None when `models_dir`/CURRENT names an existing version directory, else the reason."""
    pointer = models_dir / "CURRENT"
    try:
        version = json.loads(pointer.read_text()).get("version")
    except (OSError, ValueError, AttributeError) as e:
        return f"no model published yet ({pointer}: {e})"
    if not isinstance(version, str) or not (models_dir / "versions" / version).is_dir():
        return f"{pointer} names {version!r}, which is not a published version"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else "ready"
    if mode == "ready":
        problem = check_ready(os.environ.get("PORT", "8000"))
    elif mode == "model":
        home = Path(os.environ.get("SPECREC_HOME", "var"))
        problem = check_model(Path(os.environ.get("SPECREC_MODELS_DIR") or home / "models"))
    else:
        print(f"usage: healthcheck.py [ready|model], got {mode!r}", file=sys.stderr)
        return 2
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
