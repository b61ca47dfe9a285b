"""The stores the API and the workers share: the retrain-job queue and the ingested interactions.

The standard library and the contract only (and psycopg, the ``postgres`` extra, when
``SPECREC_DATABASE_URL`` names PostgreSQL): no torch, no FastAPI; it imports neither
``trainer``, ``service`` nor ``worker`` (``make lint`` checks it with import-linter).

- ``db``: the database both stores use, SQLite files or PostgreSQL, and its schema versions;
- ``jobs``: the retrain-job queue (the API enqueues, workers claim and run);
- ``feedback``: the ingested interactions (the API appends, the worker snapshots);
- ``once``: a store built once per process, on first use (migrations run once).
"""
