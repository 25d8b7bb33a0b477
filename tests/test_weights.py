"""Compact weights: state dict alone, half precision, loading back into the float32 network."""

import pytest
import torch

from custom_networks.nets import RCBUNetPlusPlus
from tools.weights import compact_weights


def test_compact_weights_from_resume_checkpoint_loads_back_close_to_original(tmp_path):
    net = RCBUNetPlusPlus(2, features=(4, 8, 8, 8, 8)).eval()
    opt = torch.optim.Adam(net.parameters())
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    info = compact_weights(tmp_path / "ckpt.pt", tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert info["tensors"] == len(state)
    other = RCBUNetPlusPlus(2, features=(4, 8, 8, 8, 8)).eval()
    other.load_state_dict(state)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.sigmoid(other(x)), torch.sigmoid(net(x)), atol=5e-3, rtol=0)


def test_compact_weights_rejects_a_file_without_state_dict(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        compact_weights(tmp_path / "x.pt", tmp_path / "y.pt")
    assert not (tmp_path / "y.pt").exists()
