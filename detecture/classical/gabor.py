"""The one Gabor filter bank of the classical segmenter and describer: Gaussian pass-bands in the Fourier domain.

A band is a Gaussian of standard deviation ``bandwidth · f`` around the frequency vector (f cos θ, f sin θ), at
:data:`N_ORIENTATIONS` orientations θ = π·j / N over a half-turn (a real image's spectrum is symmetric). Narrow bands
(σ = 0.2 f) separated Outex textures far better than wide ones, and a constant relative bandwidth weighs every octave
of a natural 1/f spectrum alike. The segmenter uses centre frequencies in cycles per pixel, the describer in cycles
per image side. The segmenter's orientations and bandwidth are settings (:class:`.ClassicalParams`); the describer
always uses the defaults here, so a region is described alike whatever the segmenter was set to.
"""

from __future__ import annotations

import numpy as np

N_ORIENTATIONS = 8
BANDWIDTH = 0.2  # Gaussian pass-band sigma, relative to the centre frequency


def orientations(n: int = N_ORIENTATIONS) -> np.ndarray:
    """The bank's orientations θ_j = π·j / n, in radians."""
    return np.pi * np.arange(n) / n


def centres(frequencies, n_orientations: int = N_ORIENTATIONS) -> tuple[np.ndarray, np.ndarray]:
    """(F, O) horizontal and vertical components (u, v) = (f cos θ, f sin θ) of the bank's band centres."""
    freqs = np.asarray(frequencies, np.float32)[:, None]
    theta = orientations(n_orientations).astype(np.float32)[None, :]
    return freqs * np.cos(theta), freqs * np.sin(theta)


def bank(fy: np.ndarray, fx: np.ndarray, frequencies, bandwidth: float = BANDWIDTH, symmetric: bool = False,
         n_orientations: int = N_ORIENTATIONS) -> np.ndarray:
    """(F, O, *grid) float32 pass-bands on the broadcastable frequency grids ``fy`` (column) and ``fx`` (row).

    ``symmetric`` adds the mirrored band at -(u, v), the other half of a real signal's spectrum (for power
    spectra); without it each band selects one half, as an analytic (complex) Gabor filter does. The Gaussian is
    separable, so each band is an outer product of two 1-D profiles. Single precision throughout: the bands weigh
    energies that are standardised (segmenter) or summed into a few ratios (describer).
    """
    fy, fx = np.asarray(fy, np.float32), np.asarray(fx, np.float32)
    freqs = np.asarray(frequencies, np.float32)[:, None]
    u, v = centres(frequencies, n_orientations)
    scale = (-1 / (2 * (bandwidth * freqs) ** 2))[..., None, None]  # (F, 1, 1, 1)
    expand = (slice(None), slice(None), None, None)
    bands = np.exp(scale * (fy - v[expand]) ** 2) * np.exp(scale * (fx - u[expand]) ** 2)
    if symmetric:
        bands += np.exp(scale * (fy + v[expand]) ** 2) * np.exp(scale * (fx + u[expand]) ** 2)
    return bands
