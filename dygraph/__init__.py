"""dygraph: DY-Graph / Differentiable Dynamic Wirings — instance-aware connectivity on complete DAGs.

See README.md. `create_model(name)` builds the models below; `list_models()` names them.
"""
from __future__ import annotations

from torch import nn

from common.hub import build_model

from .model import (DAGStage, DYGraphNet, RandWireNet, adjacency, backbone_state, dag_stages, detection_backbone,
                    executed_nodes, faster_rcnn, random_dag, rewire, set_mode, zero_init_last_bn)

# Backbones of Table 1 / Table 5 and their CIFAR analogues.
BACKBONES = ("resnet20_cifar", "resnet32_cifar", "resnet56_cifar", "resnet110_cifar", "resnet18", "resnet34",
             "resnet50", "resnet101", "resnext50_32x4d", "mobilenet_v2", "regnet_x_600mf", "regnet_x_1_6gf",
             "regnet_y_600mf")
RANDWIRE = {"randwire_er": "er", "randwire_ba": "ba", "randwire_ws": "ws", "dygraph_randwire": "complete"}


def list_models() -> list[str]:
    """Names accepted by `create_model`: dygraph_<backbone> (α_b), static_<backbone> (α), RandWire."""
    return [*(f"dygraph_{b}" for b in BACKBONES), *(f"static_{b}" for b in BACKBONES), *RANDWIRE]


def model_spec(name: str, **kwargs) -> tuple[type, dict]:
    """The class and constructor arguments `create_model(name, **kwargs)` builds."""
    if name not in list_models():
        raise ValueError(f"Unknown model {name!r}. Valid choices: {', '.join(list_models())}.")
    if name in RANDWIRE:
        return RandWireNet, {"graph": RANDWIRE[name], **kwargs}
    wiring, backbone = name.split("_", 1)
    return DYGraphNet, {"backbone": backbone, "wiring": "dynamic" if wiring == "dygraph" else "static", **kwargs}


def create_model(name: str, pretrained: bool | str = False, num_classes: int | None = None, in_chans: int = 3,
                 **kwargs) -> nn.Module:
    """Build a DY-Graph model by name; `pretrained`: True, a tag ("mini"), a weights folder or a Hub id."""
    cls, args = model_spec(name, **kwargs)
    return build_model(cls, args, name, pretrained, num_classes, in_chans)


__all__ = ["create_model", "list_models", "model_spec", "DAGStage", "DYGraphNet", "RandWireNet", "adjacency", "backbone_state",
           "dag_stages", "detection_backbone", "executed_nodes", "faster_rcnn", "random_dag", "rewire", "set_mode",
           "zero_init_last_bn"]
