"""adanet: Convolutional Networks with Adaptive Computation Graphs (Veit & Belongie, ECCV 2018); see README.md."""
from .model import Adanet, Gate, create_model, list_models

__all__ = ["Adanet", "Gate", "create_model", "list_models"]
