"""Every model family builds for grayscale and RGB small images; pretrained fails clearly
offline."""

import pytest
import torch

from flower_gd.models import PretrainedWeightsUnavailable, build_model, count_parameters


@pytest.mark.parametrize("name", ["cnn", "cnn-wide", "resnet18", "densenet121",
                                  "mobilenet_v3_small"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_forward_shapes(name, shape):
    model = build_model(name, in_channels=shape[0], num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 10)


def test_small_image_stems_downsample_late():
    resnet = build_model("resnet18", 3, 10)
    assert resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, torch.nn.Identity)
    mobile = build_model("mobilenet_v3_small", 1, 10)
    assert mobile.features[0][0].stride == (1, 1) and mobile.features[0][0].in_channels == 1
    dense = build_model("densenet121", 1, 10)
    assert isinstance(dense.features.pool0, torch.nn.Identity)


def test_resnet18_parameter_count_matches_the_design_figure():
    # DESIGN.md: a 10-class ResNet-18 has 11,181,642 parameters (3x3 stem: 11,173,962)
    assert count_parameters(build_model("resnet18", 3, 10)) == 11_173_962


def test_pretrained_weights_fail_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=false"):
        build_model("resnet18", 3, 10, pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable, match="no pretrained weights"):
        build_model("cnn", 1, 10, pretrained=True)
