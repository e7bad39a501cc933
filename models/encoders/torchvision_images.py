"""torchvision's ResNet-34 and DenseNet-121 for chest films, as MedFuse trains them (optional).

Used only when torchvision is installed (it is not a dependency: its wheels must match the
installed torch build). ImageNet weights come from a LOCAL file (e.g. torchvision's
`resnet34-b627a593.pth`), never from the network; the first convolution takes the single
grey channel, its RGB kernels summed (`images.adapt_input_channels`), and the 1000-class
classifier is replaced by an `out_dim` projection.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from clinfuse.etl.errors import ConfigError

from .images import _Standardise, channels_last, load_local_weights

ARCHITECTURES = ("resnet34", "densenet121")

# ImageNet's channel statistics averaged over R, G, B: the grey image stands for all three.
IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = 0.449, 0.226

# torchvision's own DenseNet files use the old names "denselayer1.norm.1.weight" for "norm1.weight"
_OLD_DENSENET_NAME = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise ConfigError("encoder torchvision_*: torchvision is not installed (pip install the torchvision build "
                          "that matches your torch, or use resnet34 / densenet121 from MONAI)") from None
    except (RuntimeError, OSError) as exc:  # e.g. a CUDA torchvision wheel beside the CPU torch build
        detail = " ".join(str(exc).split())[:120]
        raise ConfigError(f"encoder torchvision_*: torchvision is installed but does not load with torch "
                          f"{torch.__version__} ({detail}); install the torchvision build that matches it") from None
    return torchvision


def _single_channel(conv: nn.Conv2d) -> nn.Conv2d:
    return nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)


class TorchvisionImageEncoder(nn.Module):
    """torchvision ResNet-34 / DenseNet-121, one input channel, projecting to `out_dim`.

    `[B, 1, S, S]` in [0, 1] -> `[B, out_dim]`.

    Args:
        arch: "resnet34" or "densenet121".
        out_dim: size of the projection that replaces the ImageNet classifier (the model preset).
        weights: a LOCAL torchvision state-dict file (ImageNet weights), or None to start from scratch.
    """

    def __init__(self, arch: str, out_dim: int, weights: str | None = None):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ConfigError(f"encoder torchvision: arch {arch!r} is not one of {list(ARCHITECTURES)}")
        models = _torchvision().models
        self.out_dim = out_dim
        self.norm = _Standardise(IMAGENET_GREY_MEAN, IMAGENET_GREY_STD)
        if arch == "resnet34":
            self.net = models.resnet34(weights=None)
            self.net.conv1 = _single_channel(self.net.conv1)
            self.net.fc = nn.Linear(self.net.fc.in_features, out_dim)
            classifier = ("fc.",)
        else:
            self.net = models.densenet121(weights=None)
            self.net.features.conv0 = _single_channel(self.net.features.conv0)
            self.net.classifier = nn.Linear(self.net.classifier.in_features, out_dim)
            classifier = ("classifier.",)
        load_local_weights(self.net, weights, classifier, rename=lambda k: _OLD_DENSENET_NAME.sub(r"\1\2", k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(channels_last(self.norm(x)))

