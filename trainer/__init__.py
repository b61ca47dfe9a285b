"""DirectSpec / DirectSpec+ trainer.

Importing this package imports nothing heavy: `trainer.artifact` and `trainer.spectrum` are
numpy-only and are shared with the service, which must never import torch.
"""
