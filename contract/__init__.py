"""The contract between the trainer and the service: what both processes read and write.

numpy, pydantic and the standard library only: no torch, no FastAPI, no database. ``trainer``,
``service``, ``store`` and ``worker`` import this package; it imports none of them, and
``trainer`` and ``service`` never import each other (``make lint`` checks it with
import-linter).

- ``artifact``: the versioned model artifact and its registry (write, verify, switch atomically);
- ``manifest``: the artifact's manifest as a typed model (``Manifest``);
- ``spectrum``: singular values and effective rank of embedding matrices;
- ``config``: ``TrainConfig``, the hyper-parameters of a training run, and their defaults;
- ``jobspec``: a retrain job's parameters resolved into a ``TrainConfig``;
- ``ids``: the rule user and item ids follow;
- ``settings``: the settings both processes read (home, registry, database URL, gate);
- ``layout``: where everything lives under ``SPECREC_HOME``.
"""
