"""2D (chest X-ray) and 3D (T1 MRI) image encoders from MONAI.

torchvision's wheels do not load with the CPU build of torch, so the ResNets
and DenseNets come from `monai.networks.nets`. Inputs are single-channel
images in [0, 1] (`[B, 1, S, S]` or `[B, 1, D, D, D]`); they are standardised
inside the encoder. Pretrained weights are an optional LOCAL file: nothing is
ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks import nets
from torch import nn

from etl.errors import InputError

_RESNETS = {
    "resnet10": nets.resnet10,
    "resnet18": nets.resnet18,
    "resnet34": nets.resnet34,
    "resnet50": nets.resnet50,
}


def _load_local_weights(module: nn.Module, weights: str | None) -> None:
    if not weights:
        return
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: pretrained weights file not found (weights must be a local file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if len(missing) == len(list(module.state_dict())):
        raise InputError(f"{path}: no parameter names match the {type(module).__name__} encoder")


class _Standardise(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MonaiResNet(nn.Module):
    """MONAI ResNet with its classifier replaced by a `out_dim` projection.

    conv1 uses stride 2 as in the ImageNet ResNet (MONAI's default stride 1
    would quadruple the cost at 224 px).
    """

    def __init__(
        self,
        depth: str,
        spatial_dims: int,
        out_dim: int,
        weights: str | None = None,
        conv1_stride: int = 2,
    ):
        super().__init__()
        self.out_dim = out_dim
        self.norm = _Standardise(0.5, 0.25)
        self.net = _RESNETS[depth](
            spatial_dims=spatial_dims, n_input_channels=1, num_classes=out_dim, conv1_t_stride=conv1_stride
        )
        _load_local_weights(self.net, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class MonaiDenseNet121(nn.Module):
    """MONAI DenseNet-121 projecting to `out_dim`."""

    def __init__(self, spatial_dims: int, out_dim: int, weights: str | None = None):
        super().__init__()
        self.out_dim = out_dim
        self.norm = _Standardise(0.5, 0.25)
        self.net = nets.DenseNet121(spatial_dims=spatial_dims, in_channels=1, out_channels=out_dim)
        _load_local_weights(self.net, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class SmallCNN(nn.Module):
    """A few conv-BN-ReLU-pool blocks + global average pool: the CPU demo encoder.

    `[B, 1, S, S]` (spatial_dims=2) or `[B, 1, D, D, D]` (3) -> `[B, out_dim]`.
    """

    def __init__(self, spatial_dims: int, channels: tuple[int, ...], out_dim: int):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        layers: list[nn.Module] = [_Standardise(0.5, 0.25)]
        c_in = 1
        for c in channels:
            layers += [conv(c_in, c, 3, padding=1), bn(c), nn.ReLU(inplace=True), pool(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h.flatten(2).mean(-1))
