"""2D (chest X-ray) and 3D (T1 MRI) image encoders from MONAI.

torchvision's wheels do not load with the CPU build of torch, so the ResNets
and DenseNets come from `monai.networks.nets`. Inputs are single-channel
images in [0, 1] (`[B, 1, S, S]` or `[B, 1, D, D, D]`); they are standardised
inside the encoder. Pretrained weights are an optional LOCAL file: nothing is
ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clinfuse.etl.errors import InputError

_RESNETS = ("resnet10", "resnet18", "resnet34", "resnet50")


def _monai_nets():
    # Imported when a MONAI network is built, not with this module: `import monai` loads every MONAI
    # subpackage (about a second), which each of the demo's ~30 processes paid for its small CNNs.
    from monai.networks import nets

    return nets


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """An RGB input layer's kernels `[C_out, 3, k, ...]` for a `channels`-channel (grey) input.

    Summing over the input channels gives a grey image the response the RGB network has to
    that image replicated into three channels (the usual way to start a single-channel
    network from ImageNet weights).
    """
    if channels != 1:
        raise ValueError(f"only RGB -> 1 channel is adapted (asked for {channels} channels)")
    return weight.sum(dim=1, keepdim=True)


def load_local_weights(module: nn.Module, weights: str | None, classifier: tuple[str, ...] = (),
                       rename: Callable[[str], str] | None = None) -> dict[str, list]:
    """Load a LOCAL state-dict file into `module` (nothing is ever downloaded).

    A weight the file holds for a 3-channel (RGB) input where `module` takes 1 channel, such as
    torchvision's ImageNet `conv1.weight` `[64, 3, 7, 7]`, is adapted by `adapt_input_channels`.
    Entries under a `classifier` prefix whose shape differs (ImageNet's 1000-class layer where the
    encoder has its `out_dim` projection) keep their initialisation. Any other shape mismatch is an
    error naming the entry; names the module lacks are ignored, as are module entries the file lacks.

    Args:
        module: the network to load into.
        weights: path of a `torch.save`d state dict, or None/"" for none.
        classifier: name prefixes of the final classifier (e.g. ("fc.",)).
        rename: maps a name in the file to the module's name for it (older naming schemes).

    Returns:
        {"loaded": names loaded, "adapted": names summed over RGB, "kept": classifier names not loaded}.
    """
    report: dict[str, list] = {"loaded": [], "adapted": [], "kept": []}
    if not weights:
        return report
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: pretrained weights file not found (weights must be a local file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = module.state_dict()
    matched = {}
    for name, value in state.items():
        name = rename(name) if rename else name
        if name not in own:
            continue
        target = own[name].shape
        if value.shape != target:
            rgb_input = value.dim() >= 3 and value.shape[1] == 3 and target[1] == 1 and (
                value.shape[:1] + value.shape[2:] == target[:1] + target[2:])
            if rgb_input:
                value = adapt_input_channels(value, 1)
                report["adapted"].append(name)
            elif name.startswith(classifier):
                report["kept"].append(name)
                continue
            else:
                raise InputError(f"{path}: entry {name!r} has shape {tuple(value.shape)} but the "
                                 f"{type(module).__name__} encoder expects {tuple(target)}")
        matched[name] = value
        report["loaded"].append(name)
    if not matched:
        raise InputError(f"{path}: no parameter names match the {type(module).__name__} encoder")
    module.load_state_dict(matched, strict=False)
    return report


def channels_last_(model: nn.Module, device: torch.device | str) -> nn.Module:
    """On CUDA, store every 2D convolution's weight channels-last (NHWC), in place; returns `model`.

    cuDNN's tensor-core convolutions run natively on NHWC: with the weights and the input (see
    `channels_last`) in that layout no transposes are inserted around each conv. On any other device
    the layout is left as it is (CPU kernels gain nothing). 3D convolutions and all other parameters
    are never changed, nor is any value. The device is the one the model runs on (the rule lives here
    once, for training and inference alike).
    """
    on_cuda = torch.device(device).type == "cuda"
    for m in model.modules():
        if on_cuda and isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return model


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A CUDA image batch `[B, C, H, W]` in channels-last layout (values unchanged); others as given."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda and x.dim() == 4 else x


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

    Args:
        depth: "resnet10" ... "resnet50".
        spatial_dims: 2 (`[B, 1, S, S]`) or 3 (`[B, 1, D, D, D]`).
        out_dim: size of the projection that replaces the classifier.
        weights: a LOCAL state-dict file: MONAI's, or torchvision's ImageNet ResNet (the same
            names; its RGB conv1 is summed to one channel, its 1000-class fc is not loaded).
        conv1_stride: stride of the first convolution.
    """

    def __init__(
        self,
        depth: str = "resnet18",
        spatial_dims: int = 2,
        *,
        out_dim: int,
        weights: str | None = None,
        conv1_stride: int = 2,
    ):
        super().__init__()
        self.out_dim = out_dim
        self.norm = _Standardise(0.5, 0.25)
        if depth not in _RESNETS:
            raise ValueError(f"depth {depth!r}: expected one of {list(_RESNETS)}")
        self.net = getattr(_monai_nets(), depth)(
            spatial_dims=spatial_dims, n_input_channels=1, num_classes=out_dim, conv1_t_stride=conv1_stride
        )
        load_local_weights(self.net, weights, classifier=("fc.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(channels_last(self.norm(x)))


class MonaiDenseNet121(nn.Module):
    """MONAI DenseNet-121 projecting to `out_dim`."""

    def __init__(self, spatial_dims: int, out_dim: int, weights: str | None = None):
        super().__init__()
        self.out_dim = out_dim
        self.norm = _Standardise(0.5, 0.25)
        self.net = _monai_nets().DenseNet121(spatial_dims=spatial_dims, in_channels=1, out_channels=out_dim)
        load_local_weights(self.net, weights, classifier=("class_layers.out.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(channels_last(self.norm(x)))


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
        h = self.features(channels_last(x))
        return self.head(h.flatten(2).mean(-1))
