"""adanet: Veit & Belongie, *Convolutional Networks with Adaptive Computation Graphs* (arXiv:1711.11503, 2017),
published at ECCV 2018 as *Convolutional Networks with Adaptive Inference Graphs*; see README.md."""
from .model import Adanet, Gate, create_model, list_models

__all__ = ["Adanet", "Gate", "create_model", "list_models"]
