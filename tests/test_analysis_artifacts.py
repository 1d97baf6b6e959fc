"""analysis.artifacts: models rebuilt from their MLflow params and weights (no training)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis import artifacts
from trainables.config import resolve_classifier_config
from trainables.models import Autoencoder, ConvEncoder, DenoisedClassifier, EncoderClassifier, MLPHead, SmallCNN


def as_params(config: dict) -> dict[str, str]:
    """What MLflow stores: every value as str (study/tracking.py flatten_params)."""
    return {k: str(v) for k, v in config.items()}


@pytest.mark.parametrize("model, overrides", [
    (lambda: SmallCNN(10, kernel_size=5, stride=2, dropout=0.25),
     {"model": "cnn", "cnn_kernel_size": 5, "cnn_stride": 2, "dropout": 0.25}),
    (lambda: EncoderClassifier(ConvEncoder(16), MLPHead(16, 10, hidden=8, layers=1, dropout=0.1), frozen=True),
     {"model": "encoder_head", "latent_dim": 16, "head_hidden": 8, "head_layers": 1, "dropout": 0.1,
      "encoder_mode": "frozen"}),
    (lambda: DenoisedClassifier(Autoencoder(8), SmallCNN(10)), {"model": "cnn"}),
    (lambda: SmallCNN(1), {"model": "cnn", "task": "even_odd"}),
])
def test_load_classifier_from_params(tmp_path, model, overrides):
    torch.manual_seed(0)
    original = model().eval()
    torch.save({k: v.detach().clone() for k, v in original.state_dict().items()}, tmp_path / "model.pt")
    params = as_params(resolve_classifier_config(overrides))
    params["meta.arm"] = "x"                         # protocol keys are ignored
    config = artifacts.config_from_params(params)
    loaded = artifacts.load_classifier(tmp_path / "model.pt", config, n_classes=10)
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded(x), original(x))
    # the first convolution of the classifier proper, not of a denoiser in front of it
    conv = artifacts.first_conv(loaded)
    assert conv.in_channels == 1 and conv is next(m for m in artifacts.own_classifier(loaded).modules()
                                                  if isinstance(m, torch.nn.Conv2d))
    codes = artifacts.embed(loaded, x)
    assert codes.shape[0] == 3 and codes.ndim == 2


def test_config_from_params_types():
    params = as_params(resolve_classifier_config({"lr": 0.003, "augment": True}))
    cfg = artifacts.config_from_params(params)
    assert cfg["lr"] == 0.003 and cfg["augment"] is True and cfg["epochs"] == 5
    assert cfg["encoder_checkpoint"] is None


def test_encoder_and_autoencoder_payloads(tmp_path):
    ae = Autoencoder(12)
    provenance = {"latent_dim": 12, "dataset": "mnist-5k", "data_sha256": "x", "corruption": "gaussian",
                  "noise_level": 0.3, "epoch": 1}
    torch.save({"state_dict": ae.state_dict(), **provenance}, tmp_path / "autoencoder.pt")
    torch.save({"state_dict": ae.encoder.state_dict(), **provenance}, tmp_path / "encoder.pt")
    net, payload = artifacts.load_autoencoder(tmp_path / "autoencoder.pt")
    enc, _ = artifacts.load_encoder(tmp_path / "encoder.pt")
    assert payload["corruption"] == "gaussian"
    x = torch.rand(4, 1, 28, 28)
    assert np.allclose(artifacts.embed(net, x), artifacts.embed(enc, x))
    torch.save(ae.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not an encoder.pt"):
        artifacts.load_encoder(tmp_path / "bare.pt")


def test_test_inputs_reproduce_the_trial_corruption():
    clean, seen, labels, names = artifacts.test_inputs("mnist-5k", "salt_pepper", 0.2, seed=3)
    again = artifacts.test_inputs("mnist-5k", "salt_pepper", 0.2, seed=3)[1]
    assert clean.shape == seen.shape == (1000, 1, 28, 28) and len(labels) == 1000 and len(names) == 10
    assert torch.equal(seen, again) and not torch.equal(seen, clean)
    assert torch.equal(artifacts.test_inputs("mnist-5k")[1], clean)
