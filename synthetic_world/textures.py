"""Band-limited 1/f noise textures with a mip pyramid, sampled trilinearly."""
import numpy as np
import torch
import torch.nn.functional as F

from .constants import MATERIAL_NAMES, MIP_LEVELS, SKY_TILE, TILE

def _noise_tile(rng, beta=1.0):
    """A periodic TILE x TILE 1/f^beta noise and its blurred mip levels, each in [0, 1]."""
    freq = np.fft.fftfreq(TILE)
    fr = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    amp = np.where(fr > 0, 1.0 / np.maximum(fr, 1.0 / TILE) ** beta, 0.0)
    spectrum = np.fft.fft2(rng.standard_normal((TILE, TILE))) * amp
    levels = []
    for level in range(MIP_LEVELS):
        sigma = 0.5 * 2 ** level  # texels; a footprint of 2^level texels is band-limited
        blur = np.exp(-2 * (np.pi * sigma * fr) ** 2)
        levels.append(np.real(np.fft.ifft2(spectrum * blur)))
    base = levels[0]
    lo, hi = np.percentile(base, 1), np.percentile(base, 99)
    return [np.clip((lv - lo) / (hi - lo), 0, 1) for lv in levels]


def make_texture_atlas(rng):
    """Atlas of one noise tile per material plus the sky: 1 x 1 x L x (T+2) x n(T+2),
    each tile wrapped by one texel so that bilinear sampling is periodic."""
    n = len(MATERIAL_NAMES) + 1
    atlas = np.zeros((MIP_LEVELS, TILE + 2, n * (TILE + 2)), dtype=np.float32)
    for m in range(n):
        levels = _noise_tile(rng, beta=1.0 if m != SKY_TILE else 1.4)
        for lv, img in enumerate(levels):
            atlas[lv, :, m * (TILE + 2):(m + 1) * (TILE + 2)] = np.pad(img, 1, mode="wrap")
    return torch.from_numpy(atlas)[None, None]


def sample_atlas(atlas, tile, s, t, level):
    """Trilinear lookup. tile, s, t, level: N arrays (s, t in texels, level in mip units)."""
    n_tiles = atlas.shape[-1] // (TILE + 2)
    x = tile * (TILE + 2) + 1 + np.mod(s, TILE)
    y = 1 + np.mod(t, TILE)
    width, height = n_tiles * (TILE + 2), TILE + 2
    grid = np.stack([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1,
                     2 * np.clip(level, 0, MIP_LEVELS - 1) / (MIP_LEVELS - 1) - 1], axis=-1)
    grid = torch.from_numpy(grid.astype(np.float32)).view(1, 1, 1, -1, 3)
    out = F.grid_sample(atlas, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(-1).numpy()
