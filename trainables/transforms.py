"""Corruption and augmentation of whole image batches on the device: Gaussian and
salt-and-pepper noise (seeds 003 and 004), seed 002's affine + brightness/contrast jitter.

One random draw per call for the whole batch, on the generator's device; no per-sample Python
and no PIL (see benchmarks/throughput.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F



def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """Corrupt images `x` in [0, 1] (any shape); returns a new tensor, `x` is unchanged.

    gaussian:    x + level * N(0, 1), clamped to [0, 1] (level = sigma)
    salt_pepper: each pixel independently becomes 1 (salt) with probability level/2 and 0
                 (pepper) with probability level/2 (level = amount, the share of pixels hit)
    The random numbers are drawn on the generator's device; one draw per call, whole batch.
    """
    if kind == "none" or level == 0.0:
        return x
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
        return (x + level * noise.to(x.device, x.dtype)).clamp_(0.0, 1.0)
    if kind == "salt_pepper":
        u = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        out = torch.where(u < level, torch.zeros((), dtype=x.dtype, device=x.device), x)
        return out.masked_fill_(u < level / 2, 1.0)
    raise ValueError(f"unknown corruption {kind!r}; valid: none, gaussian, salt_pepper")


def corrupt_fixed(x: torch.Tensor, kind: str, level: float, generator: torch.Generator,
                  chunk: int = 8192) -> torch.Tensor:
    """`corrupt` for a whole evaluation set, drawn once (fixed per seed) in chunks to bound memory."""
    if kind == "none" or level == 0.0:
        return x
    return torch.cat([corrupt(part, kind, level, generator) for part in x.split(chunk)])


@dataclass(frozen=True)
class AugmentSpec:
    """Seed 002's augmentation: RandomAffine(10, (0.1, 0.1), (0.9, 1.1)), ColorJitter(0.2, 0.2)."""

    degrees: float = 10.0
    translate: float = 0.1  # share of the image width/height
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.2
    contrast: float = 0.2


def augment_batch(x: torch.Tensor, generator: torch.Generator, spec: AugmentSpec = AugmentSpec()) -> torch.Tensor:
    """Random affine + brightness/contrast jitter for a batch [B, 1, H, W] in [0, 1].

    One `grid_sample` call does rotation, translation and scale for the whole batch (zero fill,
    as PIL does); the jitter is elementwise after it. Each image gets its own
    parameters, drawn in one call from `generator`.
    """
    batch = x.shape[0]
    r = torch.rand(batch, 6, generator=generator, device=generator.device).to(x.device, torch.float32)
    angle = (2 * r[:, 0] - 1) * math.radians(spec.degrees)
    # normalised coordinates span 2 units per image side, so a shift of f * width is 2f
    tx = (2 * r[:, 1] - 1) * spec.translate * 2
    ty = (2 * r[:, 2] - 1) * spec.translate * 2
    scale = spec.scale[0] + r[:, 3] * (spec.scale[1] - spec.scale[0])
    brightness = 1 + (2 * r[:, 4] - 1) * spec.brightness
    contrast = 1 + (2 * r[:, 5] - 1) * spec.contrast
    # grid_sample wants, per output pixel, the input location to read: the inverse of "scale
    # and rotate, then shift", p_in = R(-a)/s (p_out - t). Built by broadcasting rather than
    # with F.affine_grid (a batched matmul over a homogeneous base grid, 5x slower on CPU).
    cos = (torch.cos(angle) / scale).view(-1, 1, 1)
    sin = (torch.sin(angle) / scale).view(-1, 1, 1)
    tx, ty = tx.view(-1, 1, 1), ty.view(-1, 1, 1)
    height, width = x.shape[-2:]
    # pixel centres in normalised coordinates (align_corners=False)
    xs = ((torch.arange(width, device=x.device, dtype=torch.float32) * 2 + 1) / width - 1).view(1, 1, -1)
    ys = ((torch.arange(height, device=x.device, dtype=torch.float32) * 2 + 1) / height - 1).view(1, -1, 1)
    dx, dy = xs - tx, ys - ty
    grid = torch.stack((cos * dx + sin * dy, cos * dy - sin * dx), dim=-1)  # [B, H, W, 2]
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # ColorJitter on a 1-channel image: brightness scales, contrast blends with the image mean
    out = out.mul_(brightness.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = out.sub_(mean).mul_(contrast.view(-1, 1, 1, 1)).add_(mean).clamp_(0.0, 1.0)
    return out.to(x.dtype)
