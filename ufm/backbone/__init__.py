"""Backbone mode: real networks (MLP, ResNet18, WRN-28) trained with the UFM's losses and weight decay,
measured with the same NC metrics, and compared with the UFM of the same K, class counts, loss and λ.

config (TrainConfig) · data (datasets as tensors) · networks · measure (streaming NC of a network) ·
checkpoint · distributed (DDP) · training (the loop) · compare (the UFM twin and the comparison plot).
The CLI is `python -m ufm.train`.
"""
