"""rdinet: RDI-Net, Relational Dynamic Inference Networks (Wang et al., ICCV 2021). See README.md."""
from __future__ import annotations

from .model import BACKBONES, RDINet


def list_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(BACKBONES)


def create_model(name: str, pretrained: bool | str = False, **kwargs) -> RDINet:
    """An RDI-Net by name (`rdinet32`, `rdinet110`, `rdinet50`, `rdinet101`).

    kwargs go to `RDINet` (num_classes, d, r, gamma, relation, tau); `r=0` gives the vanilla
    short-range routers. `pretrained` is a Hub id or local folder saved by `save_pretrained`.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown model {name!r}. Valid choices: {', '.join(list_models())}.")
    if pretrained:
        if pretrained is True:
            raise ValueError("No default weights are published for RDI-Net; pass a Hub id or a local folder.")
        model = RDINet.from_pretrained(pretrained)
        expected = {"backbone": BACKBONES[name], **kwargs}
        config = model._hub_mixin_config
        mismatched = [f"{key}={config.get(key)!r} (asked {value!r})" for key, value in expected.items()
                      if config.get(key) != value]
        if mismatched:
            raise ValueError(f"The weights in {pretrained} are not {name} with these arguments: "
                             f"{', '.join(mismatched)}.")
        return model
    return RDINet(BACKBONES[name], **kwargs)
