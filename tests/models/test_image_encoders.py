"""Image encoders: ImageNet (RGB) weights for single-channel films, torchvision's encoder, channels-last."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from clinfuse.etl.errors import ConfigError, InputError
from clinfuse.models.build import build_encoders
from clinfuse.models.encoders.images import (
    MonaiResNet,
    SmallCNN,
    adapt_input_channels,
    channels_last_,
    load_local_weights,
)


def test_summed_rgb_kernels_see_a_grey_film_as_the_rgb_network_sees_it_replicated():
    torch.manual_seed(0)
    rgb_kernels = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    grey = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    expected = F.conv2d(grey.expand(-1, 3, -1, -1), rgb_kernels, padding=1)
    got = F.conv2d(grey, adapt_input_channels(rgb_kernels, 1), padding=1)
    assert adapt_input_channels(rgb_kernels, 1).shape == (4, 1, 3, 3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # by hand for one kernel entry: the sum of the three channels' weights
    assert adapt_input_channels(rgb_kernels, 1)[1, 0, 2, 0] == rgb_kernels[1, :, 2, 0].sum()


def torchvision_style_state(net: torch.nn.Module, classes: int = 1000) -> dict[str, torch.Tensor]:
    """The network's own entries, but with an RGB conv1 and an ImageNet-sized fc (as torchvision ships them)."""
    torch.manual_seed(1)
    state = {k: torch.randn_like(v.float()) if v.is_floating_point() else v.clone() for k, v in net.state_dict().items()}
    state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    state["fc.weight"], state["fc.bias"] = torch.randn(classes, state["fc.weight"].shape[1]), torch.randn(classes)
    return state


def test_the_resnet_encoder_loads_torchvision_style_weights_summing_conv1_and_keeping_its_projection(tmp_path):
    fresh = MonaiResNet(depth="resnet18", out_dim=16)
    state = torchvision_style_state(fresh.net)
    torch.save(state, tmp_path / "resnet18-imagenet.pth")
    torch.manual_seed(5)
    projection = MonaiResNet(depth="resnet18", out_dim=16).net.fc.weight.detach().clone()
    torch.manual_seed(5)
    encoder = MonaiResNet(depth="resnet18", out_dim=16, weights=str(tmp_path / "resnet18-imagenet.pth"))
    torch.testing.assert_close(encoder.net.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(encoder.net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    torch.testing.assert_close(encoder.net.bn1.running_var, state["bn1.running_var"])
    torch.testing.assert_close(encoder.net.fc.weight, projection)  # the 1000-class layer is not loaded
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, 16)


def test_the_loader_reports_what_it_adapted_and_what_it_kept(tmp_path):
    net = MonaiResNet(depth="resnet18", out_dim=16).net
    state = torchvision_style_state(net)
    torch.save(state, tmp_path / "w.pth")
    report = load_local_weights(net, str(tmp_path / "w.pth"), classifier=("fc.",))
    assert report["adapted"] == ["conv1.weight"]
    assert report["kept"] == ["fc.weight", "fc.bias"]
    assert len(report["loaded"]) == len(state) - 2


def test_a_mismatch_outside_conv1_and_the_classifier_is_an_error_naming_the_entry(tmp_path):
    net = MonaiResNet(depth="resnet18", out_dim=16).net
    state = torchvision_style_state(net)
    state["layer2.0.conv1.weight"] = torch.randn(128, 32, 3, 3)  # a different network's layer
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"other\.pth: entry 'layer2\.0\.conv1\.weight' has shape \(128, 32, 3, 3\) "
                                         r"but the ResNet encoder expects \(128, 64, 3, 3\)"):
        load_local_weights(net, str(tmp_path / "other.pth"), classifier=("fc.",))


def test_a_file_with_no_matching_names_is_refused(tmp_path):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "x.pth")
    with pytest.raises(InputError, match="no parameter names match"):
        MonaiResNet(depth="resnet18", out_dim=8, weights=str(tmp_path / "x.pth"))


def test_channels_last_changes_the_layout_of_2d_convolutions_only_never_the_output():
    torch.manual_seed(0)
    cnn = SmallCNN(spatial_dims=2, channels=(4, 8), out_dim=5).double().eval()
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    before = cnn(x)
    assert channels_last_(cnn, "cuda:0") is cnn  # the layout alone changes: no GPU is needed to check it
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert cnn.head.weight.is_contiguous()
    torch.testing.assert_close(cnn(x.contiguous(memory_format=torch.channels_last)), before, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_channels_last_leaves_a_model_for_any_other_device_as_it_is(device):
    cnn = SmallCNN(spatial_dims=2, channels=(4, 8), out_dim=5)
    assert channels_last_(cnn, device) is cnn
    second = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)][1].weight  # [8, 4, 3, 3]
    assert second.is_contiguous() and not second.is_contiguous(memory_format=torch.channels_last)


def test_the_torchvision_encoder_without_torchvision_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    with pytest.raises(ConfigError, match="torchvision is not installed") as info:
        build_encoders({"cxr": {"name": "torchvision_resnet34", "out_dim": 8}}, ["cxr"], {"cxr": (1, 32, 32)})
    assert "\n" not in str(info.value)


def test_a_torchvision_that_does_not_load_with_this_torch_is_a_one_line_config_error(monkeypatch, tmp_path):
    # a CUDA torchvision wheel beside the CPU torch fails at import with "operator torchvision::nms does not exist"
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"installed but does not load with torch .*torchvision::nms") as info:
        build_encoders({"cxr": {"name": "torchvision_densenet121", "out_dim": 8}}, ["cxr"], {"cxr": (1, 32, 32)})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch", ["resnet34", "densenet121"])
def test_the_torchvision_encoder_starts_from_local_imagenet_weights_with_one_input_channel(tmp_path, arch):
    try:
        import torchvision
    except (ImportError, RuntimeError, OSError) as exc:  # absent, or a build that does not match torch
        pytest.skip(f"torchvision is not usable here: {type(exc).__name__}")
    from clinfuse.models.encoders.torchvision_images import TorchvisionImageEncoder

    torch.manual_seed(0)
    imagenet = getattr(torchvision.models, arch)(weights=None)  # stands for the downloaded ImageNet file
    torch.save(imagenet.state_dict(), tmp_path / f"{arch}.pth")
    encoder = TorchvisionImageEncoder(arch, out_dim=12, weights=str(tmp_path / f"{arch}.pth"))
    first = "conv1.weight" if arch == "resnet34" else "features.conv0.weight"
    got = encoder.net.state_dict()[first]
    torch.testing.assert_close(got, imagenet.state_dict()[first].sum(1, keepdim=True))
    assert encoder(torch.rand(2, 1, 64, 64)).shape == (2, 12)


def test_torchvisions_old_densenet_names_are_read_as_the_current_ones(tmp_path):
    from clinfuse.models.encoders.torchvision_images import _OLD_DENSENET_NAME

    def rename(k):
        return _OLD_DENSENET_NAME.sub(r"\1\2", k)

    assert rename("features.denseblock2.denselayer11.norm.2.running_var") == \
        "features.denseblock2.denselayer11.norm2.running_var"
    assert rename("features.denseblock1.denselayer1.conv.1.weight") == "features.denseblock1.denselayer1.conv1.weight"
    assert rename("features.norm0.weight") == "features.norm0.weight"  # current names pass through
    # the loader applies a renaming before matching names
    net = MonaiResNet(depth="resnet18", out_dim=4).net
    torch.save({"old." + k: v for k, v in net.state_dict().items()}, tmp_path / "prefixed.pth")
    report = load_local_weights(net, str(tmp_path / "prefixed.pth"), rename=lambda k: k.removeprefix("old."))
    assert len(report["loaded"]) == len(net.state_dict())
