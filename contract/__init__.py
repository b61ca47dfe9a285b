"""The contract between the trainer and the service: what both processes read and write.

numpy, pydantic and the standard library only (and psycopg, the ``postgres`` extra, when
``SPECREC_DATABASE_URL`` names PostgreSQL): no torch, no FastAPI. ``trainer`` and ``service``
both import this package and never each other (``make lint`` checks it with import-linter).

- ``artifact``: the versioned model artifact and its registry (write, verify, switch atomically);
- ``spectrum``: singular values and effective rank of embedding matrices;
- ``config``: ``TrainConfig``, the hyper-parameters of a training run, and their defaults;
- ``jobspec``: a retrain job's parameters resolved into a ``TrainConfig``;
- ``jobs`` / ``feedback``: the retrain-job queue and the ingested interactions;
- ``db``: the database both stores use, SQLite files or PostgreSQL, and its schema versions;
- ``layout``: where everything lives under ``SPECREC_HOME``.
"""
