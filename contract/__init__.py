"""The contract between the trainer and the service: what both processes read and write.

numpy, pydantic and the standard library only: no torch, no FastAPI. ``trainer`` and ``service``
both import this package and never each other (``make lint`` checks it with import-linter).

- ``artifact``: the versioned model artifact and its registry (write, verify, switch atomically);
- ``spectrum``: singular values and effective rank of embedding matrices;
- ``config``: ``TrainConfig``, the hyper-parameters of a training run, and their defaults;
- ``jobspec``: a retrain job's parameters resolved into a ``TrainConfig``;
- ``jobs`` / ``feedback``: the SQLite retrain-job queue and the ingested interactions;
- ``sqlite_store``: the connection rules both stores share;
- ``layout``: where everything lives under ``SPECREC_HOME``.
"""
