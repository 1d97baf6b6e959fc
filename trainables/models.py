"""The models of the studies, taken from the users' write-ups (docs in /work/shared/seeds).

All models take images in [0, 1], shape [B, 1, 28, 28]: the autoencoder's target is the clean
image in that range, and sharing the range lets a pretrained encoder be reused unchanged.

    ConvEncoder        seed 003: conv 1->32 s2 (28->14), conv 32->64 s2 (14->7), dense 3136->32
    ConvDecoder        seed 003 mirrored: dense 32->3136, convT 64->64 s2, convT 64->32 s2,
                       convT 32->1, sigmoid
    Autoencoder        encoder + decoder (plain or denoising: that is the training, not the model)
    MLPHead            seed 003's classifier head (dense 16, 16, n_out), optional dropout
    EncoderClassifier  encoder + head; `frozen` fixes the encoder's weights and eval mode
    SmallCNN           seed 002: 3 convs 1->4->16->64 with BatchNorm and max pooling,
                       FC 128 -> 32 -> n_out; kernel size and stride from seed 004's sweep
    DenoisedClassifier a frozen denoising autoencoder in front of any classifier
"""

from __future__ import annotations

import torch
from torch import nn


class ConvEncoder(nn.Module):
    """28x28 -> 14x14x32 -> 7x7x64 -> latent_dim (119,200 parameters at latent 32, as seed 003)."""

    def __init__(self, latent_dim: int = 32, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.latent_dim = latent_dim
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        # linear latent (no activation), as seed 003's Keras `latent_vector` Dense layer
        self.latent = nn.Linear(c2 * 7 * 7, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(self.features(x))


class ConvDecoder(nn.Module):
    """latent_dim -> 7x7x64 -> 14x14x64 -> 28x28x32 -> 28x28x1 in (0, 1) (159,169 parameters)."""

    def __init__(self, latent_dim: int = 32, channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        c1, c2 = channels
        self.expand = nn.Linear(latent_dim, c2 * 7 * 7)
        self.body = nn.Sequential(
            nn.Unflatten(1, (c2, 7, 7)),
            # kernel 3, padding 1, output_padding 1 doubles the size exactly (Keras "same")
            nn.ConvTranspose2d(c2, c2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, 1, 3, stride=1, padding=1),
            nn.Sigmoid(),  # pixels live in [0, 1]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.expand(z))


class Autoencoder(nn.Module):
    def __init__(self, latent_dim: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(latent_dim)
        self.decoder = ConvDecoder(latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class MLPHead(nn.Module):
    """`layers` hidden Linear+ReLU(+Dropout) layers of width `hidden`, then Linear to n_out."""

    def __init__(self, in_dim: int, n_out: int, hidden: int = 16, layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            if dropout > 0:  # no module at p=0: keeps the RNG stream identical to a no-dropout run
                blocks.append(nn.Dropout(dropout))
            width = hidden
        blocks.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class EncoderClassifier(nn.Module):
    """Encoder + head. With `frozen`, the encoder's weights never change and it stays in eval
    mode even when the model is put in training mode (no dropout/BN updates inside it)."""

    def __init__(self, encoder: ConvEncoder, head: MLPHead, frozen: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "EncoderClassifier":
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class SmallCNN(nn.Module):
    """Seed 002's CNN. Each conv: BatchNorm, ReLU and max pooling (2, 2, then 3 with stride 2).

    `stride` applies to the first conv only: with stride 2 in all three, 28x28 shrinks to
    1x1 before the last pooling. Padding k//2 keeps the size for kernels 3, 5 and 7. Inputs in
    [0, 1] are normalised inside with mean 0.5 / std 0.5, as seed 002's Normalize(0.5, 0.5).
    """

    def __init__(self, n_out: int = 10, kernel_size: int = 3, stride: int = 1, dropout: float = 0.0,
                 normalize: tuple[float, float] | None = (0.5, 0.5)) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.normalize = normalize

        def block(c_in: int, c_out: int, conv_stride: int, pool: nn.Module) -> list[nn.Module]:
            # Seed 002 applies ReLU then max pooling. Max pooling commutes with ReLU (both are
            # monotone), values and gradients alike, so pooling first is the same network with
            # the ReLU on a quarter of the elements: cheaper on CPU, where this model is small.
            return [nn.Conv2d(c_in, c_out, kernel_size, stride=conv_stride, padding=pad),
                    nn.BatchNorm2d(c_out), pool, nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, 4, stride, nn.MaxPool2d(2)),
            *block(4, 16, 1, nn.MaxPool2d(2)),
            *block(16, 64, 1, nn.MaxPool2d(3, stride=2)),
            nn.Flatten(),
        )
        with torch.no_grad():  # flat size depends on kernel/stride; a zero probe uses no RNG
            flat = self.features(torch.zeros(2, 1, 28, 28)).shape[1]
        fc: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        fc += [nn.Linear(flat, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
               nn.Linear(128, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
               nn.Linear(32, n_out)]
        self.classifier = nn.Sequential(*fc)
        # the probe ran in training mode and moved the BatchNorm statistics: start them fresh
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            mean, std = self.normalize
            x = (x - mean) / std
        return self.classifier(self.features(x))


class DenoisedClassifier(nn.Module):
    """Inputs pass through a frozen (eval-mode, no-grad) denoising autoencoder, then `classifier`."""

    def __init__(self, denoiser: Autoencoder, classifier: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser.requires_grad_(False).eval()
        self.classifier = classifier

    def train(self, mode: bool = True) -> "DenoisedClassifier":
        super().train(mode)
        self.denoiser.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.denoiser(x)
        return self.classifier(x)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def state_shapes(state_dict: dict) -> dict[str, list[int]]:
    """Name -> shape of every tensor in a state dict (for meta.json and shape-mismatch errors)."""
    return {name: list(t.shape) for name, t in state_dict.items() if torch.is_tensor(t)}
