"""Every registered trunk builds, runs, and round-trips its weights through ``load_pretrained``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from dmlopt.errors import DmloptError
from dmlopt.models import TRUNKS
from dmlopt.models.pretrained import load_pretrained

#: trunks that take feature vectors; every other trunk takes images.
VECTOR_TRUNKS = {"mlp"}


def _shape(name: str) -> tuple[int, ...]:
    """A small input shape that fits the trunk, to keep the tests fast."""
    return (8,) if name in VECTOR_TRUNKS else (3, 64, 64)


def _build(name: str, shape: tuple[int, ...] | None = None) -> tuple[nn.Module, int]:
    module_name, _, factory = TRUNKS[name].partition(":")
    return getattr(importlib.import_module(module_name), factory)(shape or _shape(name))


def _params(trunk: nn.Module) -> int:
    return sum(p.numel() for p in trunk.parameters())


def _save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name", list(TRUNKS))
def test_output_shape(name: str) -> None:
    trunk, out_dim = _build(name)
    trunk.eval()
    with torch.no_grad():
        out = trunk(torch.randn(2, *_shape(name)))
    assert out.shape == (2, out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "checkpoint"])
@pytest.mark.parametrize("name", list(TRUNKS))
def test_load_pretrained_round_trip(name: str, wrapped: bool, tmp_path: Path) -> None:
    source, _ = _build(name)
    with torch.no_grad():  # make every tensor, buffers included, differ from a fresh trunk's
        for t in source.state_dict().values():
            t.add_(1 if not t.is_floating_point() else torch.rand_like(t))
    state = dict(source.state_dict())
    state["fc.weight"] = torch.zeros(10, 4)  # classifier heads that the trunks do not have
    state["last_linear.weight"] = torch.zeros(10, 4)
    path = _save({"state_dict": state} if wrapped else state, tmp_path / "w.pth")

    target, _ = _build(name)
    load_pretrained(target, path)
    loaded = target.state_dict()
    assert loaded.keys() == source.state_dict().keys()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", list(TRUNKS))
def test_load_pretrained_without_num_batches_tracked(name: str, tmp_path: Path) -> None:
    """Old-format files (as the converted Cadene and torchvision weights) lack these buffers."""
    trunk, _ = _build(name)
    state = {k: v for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_pretrained(_build(name)[0], _save(state, tmp_path / "w.pth"))


@pytest.mark.parametrize("name", list(TRUNKS))
def test_load_pretrained_rejects_mismatches(name: str, tmp_path: Path) -> None:
    trunk, _ = _build(name)
    state = dict(trunk.state_dict())
    key = next(k for k, v in state.items() if v.dim() >= 1)

    wrong_shape = dict(state, **{key: torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])})
    with pytest.raises(DmloptError, match="wrong shape"):
        load_pretrained(trunk, _save(wrong_shape, tmp_path / "shape.pth"))

    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(DmloptError, match="1 missing"):
        load_pretrained(trunk, _save(missing, tmp_path / "missing.pth"))

    unexpected = dict(state, **{"extra.weight": torch.zeros(3)})
    with pytest.raises(DmloptError, match="1 unexpected"):
        load_pretrained(trunk, _save(unexpected, tmp_path / "unexpected.pth"))

    with pytest.raises(DmloptError, match="not found"):
        load_pretrained(trunk, tmp_path / "absent.pth")


def test_bninception_matches_cadene() -> None:
    """Cadene ``pretrainedmodels`` names; 11,295,240 parameters there, minus 1,025,000 for
    ``last_linear`` (1024 x 1000 + 1000)."""
    trunk, out_dim = _build("bninception")
    state = trunk.state_dict()
    for key in [
        "conv1_7x7_s2.weight",
        "conv1_7x7_s2.bias",
        "conv1_7x7_s2_bn.running_var",
        "conv2_3x3_reduce.weight",
        "inception_3a_1x1.weight",
        "inception_3a_1x1_bn.weight",
        "inception_3c_double_3x3_2.weight",
        "inception_4e_3x3_bn.bias",
        "inception_5b_pool_proj_bn.running_mean",
    ]:
        assert key in state, key
    assert not any(k.startswith(("inception_3c_pool_proj", "inception_4e_1x1")) for k in state)
    assert tuple(state["inception_5b_1x1.weight"].shape) == (352, 1024, 1, 1)
    assert out_dim == 1024
    assert _params(trunk) == 10_270_240


def test_bninception_input_sizes() -> None:
    trunk, _ = _build("bninception", (3, 227, 227))
    with torch.no_grad():
        assert trunk.eval()(torch.randn(1, 3, 227, 227)).shape == (1, 1024)
    with pytest.raises(ValueError, match="size 48"):
        _build("bninception", (3, 48, 48))  # block 4e would get 3x3 maps: branches disagree


def test_resnet50_matches_torchvision() -> None:
    """torchvision's resnet50 has 25,557,032 parameters, 2,049,000 of them in ``fc``."""
    trunk, out_dim = _build("resnet50")
    state = trunk.state_dict()
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.2.bn3.weight",
    ]:
        assert key in state, key
    assert not any(k.startswith("fc.") for k in state)
    assert len(state) == 318  # torchvision's 320 keys less fc.weight and fc.bias
    assert out_dim == 2048
    assert _params(trunk) == 23_508_032
