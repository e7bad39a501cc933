"""Encoder registry: name -> constructor. Every encoder has `out_dim` and maps a
modality's batch tensor to `[B, out_dim]`. Adding an encoder is one module plus
one line here.
"""

from __future__ import annotations

from functools import partial

from .ehr import EHRLSTM, EHRTransformer
from .images import MonaiDenseNet121, MonaiResNet, SmallCNN
from .tabular import TabularMLP
from .torchvision_images import TorchvisionImageEncoder

ENCODERS = {
    "ehr_transformer": EHRTransformer,
    "ehr_lstm": EHRLSTM,
    "resnet18": partial(MonaiResNet, depth="resnet18", spatial_dims=2),
    "resnet34": partial(MonaiResNet, depth="resnet34", spatial_dims=2),
    "resnet50": partial(MonaiResNet, depth="resnet50", spatial_dims=2),
    "densenet121": partial(MonaiDenseNet121, spatial_dims=2),
    "small_cnn": partial(SmallCNN, spatial_dims=2),
    "torchvision_resnet34": partial(TorchvisionImageEncoder, arch="resnet34"),  # needs torchvision
    "torchvision_densenet121": partial(TorchvisionImageEncoder, arch="densenet121"),  # needs torchvision
    "resnet10_3d": partial(MonaiResNet, depth="resnet10", spatial_dims=3),
    "resnet18_3d": partial(MonaiResNet, depth="resnet18", spatial_dims=3),
    "densenet121_3d": partial(MonaiDenseNet121, spatial_dims=3),
    "small_cnn_3d": partial(SmallCNN, spatial_dims=3),
    "tabular_mlp": TabularMLP,
}

__all__ = ["ENCODERS"]
