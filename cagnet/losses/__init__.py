"""Losses of CaGNet: pixel classification, adversarial (several kinds), KL and MMD content loss.

Shapes follow the segmentation convention: features and scores are ``[N, C, H, W]``, label maps
and masks ``[N, H, W]`` on the same grid. A *labelled* pixel is one whose label is not
``ignore_index`` (255). Every loss averages over labelled pixels only, and when no pixel is
labelled it returns a zero that still carries a ``grad_fn`` (when an input requires grad), so a
training step never sees NaN.

All losses compute in float32 (or float64 when given float64), also under autocast, because
distances, exponentials and logarithms lose too much precision in half precision.

Modules
-------
``segmentation``   pixel classification loss and the KL term of the contextual latent code
``adversarial``    GAN losses (``lsgan`` as the original defines it, least squares, BCE, WGAN-GP)
``mmd``            the MMD content loss (runs bucketed by length, analytic gradient) and its plain loop
``common``         float32 computation, masks of labelled pixels, a zero that keeps the graph
"""
from cagnet.losses.adversarial import (GAN_KINDS, GRADIENT_PENALTY_WEIGHT, discriminator_gan_loss, gan_loss,
                                       generator_gan_loss, gradient_penalty)
from cagnet.losses.mmd import MMD_BANDWIDTHS, MMD_TILING, MMDTiling, mmd_loss, mmd_loss_loop
from cagnet.losses.segmentation import classification_loss, kl_divergence

__all__ = [
    "GAN_KINDS", "GRADIENT_PENALTY_WEIGHT", "discriminator_gan_loss", "gan_loss", "generator_gan_loss",
    "gradient_penalty", "MMD_BANDWIDTHS", "MMD_TILING", "MMDTiling", "mmd_loss", "mmd_loss_loop",
    "classification_loss", "kl_divergence",
]
