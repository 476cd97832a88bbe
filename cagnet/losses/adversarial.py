"""Adversarial losses of the discriminator and the generator (several kinds) and the WGAN-GP
gradient penalty, per pixel, averaged over the masked pixels (see :mod:`cagnet.losses`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cagnet.losses.common import full_precision, masked_mean
from cagnet.runtime import autocast_off

#: Gradient-penalty weight of WGAN-GP (config key ``lambda_D_gp``).
GRADIENT_PENALTY_WEIGHT = 10.0

#: The adversarial losses this module knows, and the discriminator output each one expects.
GAN_KINDS: dict[str, str] = {
    "lsgan": "sigmoid score in [0, 1] (L1 distance to the 0/1 target, as in the original)",
    "ls": "sigmoid score in [0, 1] (squared distance to the 0/1 target)",
    "gan": "sigmoid score in [0, 1], or the raw logit with logits=True (binary cross-entropy)",
    "wgan-gp": "raw, unbounded critic output (no sigmoid)",
}


def gan_loss(prediction: torch.Tensor, target_is_real: bool, kind: str = "lsgan",
             mask: torch.Tensor | None = None, logits: bool = False) -> torch.Tensor:
    """Adversarial loss of discriminator outputs against an all-real or all-fake target.

    Args:
        prediction: [N, 1, H, W] discriminator output per pixel; what it must be depends on
            ``kind`` (see ``GAN_KINDS``).
        target_is_real: True for target 1 ("real"), False for target 0 ("fake").
        kind:
            - ``"lsgan"``: ``|score - target|`` (an L1 loss). This is what the original's config
              value ``lsgan`` computes, despite its name; kept under that name for fidelity.
            - ``"ls"``: ``(score - target)^2``, the least-squares GAN loss the name suggests.
            - ``"gan"``: binary cross-entropy. Pass the raw logit with ``logits=True`` (stable);
              a sigmoid score is accepted too, its log is then bounded as in
              ``F.binary_cross_entropy``.
            - ``"wgan-gp"``: Wasserstein critic loss, ``-critic`` for real and ``+critic`` for
              fake; add ``gradient_penalty`` to the critic's loss.
        mask: [N, H, W] bool, True where a pixel counts (labelled); None = every pixel.
        logits: only for ``"gan"``: ``prediction`` holds logits instead of sigmoid scores.

    Returns:
        Scalar averaged over the masked pixels (zero with a grad_fn when the mask is empty).
    """
    if kind not in GAN_KINDS:
        raise ValueError(f"gan_loss: unknown kind {kind!r} (expected one of {sorted(GAN_KINDS)})")
    if logits and kind != "gan":
        raise ValueError(f"gan_loss: logits=True only applies to kind 'gan', not {kind!r}")
    with autocast_off(prediction.device):
        prediction = full_precision(prediction)
        target_value = 1.0 if target_is_real else 0.0
        if kind == "wgan-gp":
            per_pixel = -prediction if target_is_real else prediction
        elif kind == "lsgan":
            per_pixel = (prediction - target_value).abs()
        elif kind == "ls":
            per_pixel = (prediction - target_value).pow(2)
        else:
            target = torch.full_like(prediction, target_value)
            if logits:
                per_pixel = F.binary_cross_entropy_with_logits(prediction, target,
                                                               reduction="none")
            else:
                per_pixel = F.binary_cross_entropy(prediction, target, reduction="none")
        return masked_mean(per_pixel, mask)


def discriminator_gan_loss(real_prediction: torch.Tensor, fake_prediction: torch.Tensor,
                           kind: str = "lsgan", mask: torch.Tensor | None = None,
                           logits: bool = False) -> torch.Tensor:
    """Discriminator's adversarial loss: real features -> "real", generated ones -> "fake".

    ``real_prediction`` and ``fake_prediction`` are [N, 1, H, W] outputs on real and generated
    features. For ``"wgan-gp"`` add ``gradient_penalty(critic, real, fake, mask)``.
    """
    return (gan_loss(real_prediction, True, kind, mask, logits)
            + gan_loss(fake_prediction, False, kind, mask, logits))


def generator_gan_loss(fake_prediction: torch.Tensor, kind: str = "lsgan",
                       mask: torch.Tensor | None = None, logits: bool = False) -> torch.Tensor:
    """Generator's adversarial loss: its features should be judged "real"."""
    return gan_loss(fake_prediction, True, kind, mask, logits)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     mask: torch.Tensor | None = None,
                     weight: float = GRADIENT_PENALTY_WEIGHT,
                     rng: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP gradient penalty ``weight * mean((||grad critic(x_hat)||_2 - 1)^2)``.

    The critic acts on each pixel's feature vector (1x1 convolutions), so each pixel is one
    sample: ``x_hat = a * real + (1 - a) * fake`` with one uniform ``a`` per pixel, the gradient
    norm is taken over the C channels of each pixel, and the penalty is averaged over the masked
    pixels. (The original took one norm over a whole image's gradient, which for a per-pixel
    critic grows with the image size; the per-pixel norm is the Lipschitz constraint intended.)

    Args:
        critic: callable mapping [N, C, H, W] features to [N, 1, H, W] raw critic values.
        real, fake: [N, C, H, W] features; ``fake`` is normally detached by the caller.
        mask: [N, H, W] bool, pixels that count; None = all.
        weight: the penalty coefficient lambda (10 in the original configs).
        rng: optional random stream (``torch.Generator`` on real's device) for the interpolation weights.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake "
                         f"{tuple(fake.shape)} differ in shape")
    alpha_shape = (real.shape[0], 1, *real.shape[2:])
    alpha = torch.rand(alpha_shape, device=real.device, dtype=real.dtype, generator=rng)
    interpolated = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(interpolated)
        (gradients,) = torch.autograd.grad(scores.sum(), interpolated, create_graph=True)
    with autocast_off(real.device):
        gradients = full_precision(gradients)
        # epsilon inside the sqrt keeps the penalty's own gradient finite at a zero gradient
        norms = (gradients.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt()
        return weight * masked_mean((norms - 1.0).pow(2), mask)
