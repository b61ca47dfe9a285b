"""DirectSpec / DirectSpec+ trainer: data, encoders, losses, sampling, the training loop,
evaluation, the quality gate, the ``specrec-train`` CLI and the retrain worker.

Everything the service also reads (the model artifact, spectrum statistics, the job and
interaction stores, the home layout, TrainConfig) lives in ``contract``.
"""
