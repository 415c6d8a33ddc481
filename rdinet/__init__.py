"""rdinet: RDI-Net, Relational Dynamic Inference Networks (Wang et al., ICCV 2021). See README.md."""
from __future__ import annotations

from common.hub import build_model

from .model import BACKBONES, RDINet


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(BACKBONES)


def model_spec(name: str, **kwargs) -> tuple[type[RDINet], dict]:
    """The class and constructor arguments `create_model(name, **kwargs)` builds."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown model {name!r}. Valid choices: {', '.join(list_models())}.")
    return RDINet, {"backbone": BACKBONES[name], **kwargs}


def create_model(name: str, pretrained: bool | str = False, num_classes: int | None = None, in_chans: int = 3,
                 **kwargs) -> RDINet:
    """An RDI-Net by name (`rdinet20`, `rdinet32`, `rdinet110`, `rdinet50`, `rdinet101`).

    kwargs go to `RDINet` (d, r, gamma, relation, tau); `r=0` gives the vanilla short-range routers.
    `pretrained`: True, a tag ("mini"), a weights folder or a Hub id; the weights must be `name`
    with these kwargs (a mismatch is an error naming it).
    """
    cls, args = model_spec(name, **kwargs)
    return build_model(cls, args, name, pretrained, num_classes, in_chans)
