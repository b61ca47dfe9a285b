"""FastAPI recommendation service (never imports torch)."""
