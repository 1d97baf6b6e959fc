"""Model shapes and parameter counts against the users' write-ups (seeds 002, 003, 004)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import (
    Autoencoder, ConvDecoder, ConvEncoder, DenoisedClassifier, EncoderClassifier, MLPHead,
    SmallCNN, count_trainable,
)

X = torch.rand(4, 1, 28, 28)


def test_encoder_and_decoder_match_seed_003():
    encoder, decoder = ConvEncoder(32), ConvDecoder(32)
    # seed 003's Keras summaries: encoder 119,200 and decoder 159,169 parameters
    assert count_trainable(encoder) == 119_200
    assert count_trainable(decoder) == 159_169
    z = encoder(X)
    assert z.shape == (4, 32)
    assert encoder.features[:2](X).shape == (4, 32, 14, 14)
    assert encoder.features[:4](X).shape == (4, 64, 7, 7)
    out = decoder(z)
    assert out.shape == (4, 1, 28, 28) and 0.0 < out.min() and out.max() < 1.0


@pytest.mark.parametrize("latent_dim", [8, 32, 64])
def test_autoencoder_latent_dim(latent_dim):
    model = Autoencoder(latent_dim)
    assert model.encoder(X).shape == (4, latent_dim)
    assert model(X).shape == X.shape


def test_head_matches_seed_003():
    head = MLPHead(32, 10, hidden=16, layers=2)
    assert count_trainable(head) == 970  # seed 003: dense 16, 16, 10 on the 32-d code
    assert head(torch.rand(4, 32)).shape == (4, 10)
    assert not any(isinstance(m, nn.Dropout) for m in head.modules())
    assert sum(isinstance(m, nn.Dropout) for m in MLPHead(32, 10, dropout=0.3).modules()) == 2
    assert MLPHead(32, 1, layers=0)(torch.rand(4, 32)).shape == (4, 1)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_cnn_kernel_and_stride_sweep(kernel_size, stride):
    model = SmallCNN(10, kernel_size=kernel_size, stride=stride, dropout=0.25)
    assert model(X).shape == (4, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 16, 64]  # seed 002: 1 -> 4 -> 16 -> 64
    assert all(c.kernel_size == (kernel_size, kernel_size) for c in convs)
    assert convs[0].stride == (stride, stride)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears] == [128, 32, 10]  # FC 128 -> 32 -> 10
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3


def test_cnn_flat_size_and_binary_output():
    model = SmallCNN(1)
    assert model.classifier[0].in_features == 64 * 3 * 3  # 28 -> 14 -> 7 -> 3 (pool 3, stride 2)
    # the shape probe at construction must not leave BatchNorm statistics behind
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_mean == 0)
    assert model(X).shape == (4, 1)


def test_frozen_encoder_stays_in_eval_mode_without_gradients():
    model = EncoderClassifier(ConvEncoder(32), MLPHead(32, 10), frozen=True)
    model.train()
    assert model.training and not model.encoder.training and model.head.training
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert count_trainable(model) == 970
    model(X).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    finetuned = EncoderClassifier(ConvEncoder(32), MLPHead(32, 10), frozen=False)
    assert count_trainable(finetuned) == 119_200 + 970


def test_denoised_classifier_freezes_the_denoiser():
    model = DenoisedClassifier(Autoencoder(32), SmallCNN(10))
    model.train()
    assert not model.denoiser.training and model.classifier.training
    assert count_trainable(model) == count_trainable(SmallCNN(10))
    assert model(X).shape == (4, 10)
