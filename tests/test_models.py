"""Architectures and the checkpoint format."""

import pytest
import torch

from backdoorlab.errors import ConfigError
from backdoorlab.models.checkpoint import load_weights, read_state_dict, save_weights
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.preact_resnet import preact_resnet18
from backdoorlab.models.resnet import resnet18


def test_preact_resnet18_is_the_standard_network_with_the_common_names():
    net = preact_resnet18(num_classes=10, width=64)
    assert sum(p.numel() for p in net.parameters()) == 11_171_146
    keys = set(net.state_dict())
    for key in ["conv1.weight", "layer1.0.bn1.weight", "layer1.1.conv2.weight", "layer2.0.shortcut.0.weight",
                "layer4.1.bn2.running_var", "linear.weight", "linear.bias"]:
        assert key in keys
    assert "layer1.0.shortcut.0.weight" not in keys


@pytest.mark.parametrize("size", [8, 16, 32])
def test_networks_accept_any_resolution(size):
    x = torch.rand(2, 3, size, size)
    assert preact_resnet18(num_classes=7, width=4)(x).shape == (2, 7)
    assert resnet18(num_classes=5)(x).shape == (2, 5)


def test_classifier_normalises_and_saves_only_the_network():
    net = preact_resnet18(width=4)
    model = ImageClassifier(net, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model(x), net.eval()((x - 0.5) / 0.25))
    assert set(model.net.state_dict()) == set(net.state_dict())


def _perturbed(width=4):
    torch.manual_seed(0)
    return preact_resnet18(width=width)


def test_safetensors_round_trip(tmp_path):
    src, dst = _perturbed(), preact_resnet18(width=4)
    save_weights(src, tmp_path / "w.safetensors")
    load_weights(dst, read_state_dict(tmp_path / "w.safetensors"))
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        assert torch.equal(a, b)


def test_torch_state_dicts_from_other_code_load(tmp_path):
    src = _perturbed()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    dst = preact_resnet18(width=4)
    load_weights(dst, read_state_dict(tmp_path / "ckpt.pth"))
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


class NeedsCode:
    def __init__(self):
        self.weights = torch.zeros(2)


def test_pickles_that_need_code_are_refused(tmp_path):
    torch.save({"model": NeedsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="refusing to load .*evil.pt: it is a pickle that needs code"):
        read_state_dict(tmp_path / "evil.pt")


def test_checkpoint_that_does_not_match_the_model_is_one_sentence(tmp_path):
    save_weights(preact_resnet18(width=8), tmp_path / "w8.safetensors")
    with pytest.raises(ConfigError, match=r"does not match the model \(.*wrong shape \(conv1.weight \(8, 3, 3, 3\) vs \(4, 3, 3, 3\)"):
        load_weights(preact_resnet18(width=4), read_state_dict(tmp_path / "w8.safetensors"), "checkpoint w8")
    with pytest.raises(ConfigError, match="missing"):
        load_weights(preact_resnet18(width=4), {"conv1.weight": torch.zeros(4, 3, 3, 3)})


def test_unknown_checkpoint_suffix_and_missing_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ConfigError, match="must be a run directory, a .safetensors file"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(ConfigError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.pt")


def test_resnet18_width_scales_hidden_channels_only():
    net = resnet18(num_classes=7, width=16)
    assert net.conv1.in_channels == 3 and net.conv1.out_channels == 16
    assert net.layer4[1].conv2.out_channels == 128 and net.fc.in_features == 128 and net.fc.out_features == 7
    assert sum(p.numel() for p in resnet18(num_classes=10).parameters()) == 11_173_962
