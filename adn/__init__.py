"""adn: Specialization of Sub-paths for Adaptive Depth Networks (ADN); see README.md."""
from .model import ADNet, BaseNet, all_configs, convert_sync_batchnorm, create_model, list_models, model_spec

__all__ = ["ADNet", "BaseNet", "all_configs", "convert_sync_batchnorm", "create_model", "list_models", "model_spec"]
