"""Registration of two whole images with no prior (rotation, scale, masks)."""

from .denoise import DENOISERS
from .register import MODELS, NCC_THRESHOLD, SNR_THRESHOLD, Registration, register

__all__ = ["register", "Registration", "SNR_THRESHOLD", "NCC_THRESHOLD", "DENOISERS", "MODELS"]
