"""Cross-paper targets (ours): `python -m reproduce compare [TARGET] --preset …`."""
from __future__ import annotations

from common.reproduction import CIFAR10, Target

from .comparison import run_methods

TARGETS = {
    "methods": Target("compare", "methods", "Ours: the four methods on one CIFAR ResNet, recipe and data "
                      "(accuracy, params, MACs, CPU latency)", run_methods, data=CIFAR10),
}
