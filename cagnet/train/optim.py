"""Optimisers and learning-rate schedules of CaGNet training (the original's recipe).

Three optimisers, one per trained part:

* ``backbone``: SGD with momentum (or Adam, ``optim.backbone_optimizer``) over the DeepLabV2
  backbone, its ASPP and the contextual module, in parameter groups with learning-rate
  multipliers (DeepLabV2 recipe, as the original): ResNet convs 1x, contextual convs 5x,
  ASPP weights 10x, ASPP biases 20x without weight decay. The contextual module's gate conv gets its own group
  (``context_gates``, 5x by default); the original's selection by module name misses it, so
  it never trains there (``optim.train_context_gates: false`` reproduces that).
* ``generator`` and ``discriminator``: Adam.

Schedules are closed-form functions of the iteration (``i`` = 0-based index of the
iteration about to run), equal to what the original's stateful schedulers give after ``i``
steps:

* poly (backbone): ``lr_i = base * (1 - k / max_iter) ** power`` with ``k`` = ``i`` rounded
  down to a multiple of ``every`` (the original refreshes the rate every ``lr_decay_iter``
  iterations, and not any more once ``k`` reaches ``max_iter``);
* step decay (``lambda`` policy, generator and discriminator): factor 1 before
  ``start_decay_iter``, then ``gamma ** ((i - start_decay_iter) // step_size + 1)``.

Each parameter group keeps ``initial_lr`` = multiplier x base rate; :func:`apply_learning_rates`
sets ``lr = initial_lr * factor(i)`` at the start of every iteration. Being closed-form, the
schedules need no state of their own to resume.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cagnet.config import OptimConfig, ScheduleConfig

#: Backbone parameter groups, in the order the original's poly scheduler addresses them
#: (1x, 5x, 10x, 20x), with the gate conv after the contextual convs.
BACKBONE_GROUPS: tuple[str, ...] = ("backbone", "context", "context_gates", "aspp_weight", "aspp_bias")


def poly_factor(iteration: int, max_iter: int, power: float, every: int) -> float:
    """``(1 - k / max_iter) ** power`` with ``k`` the last multiple of ``every`` <= iteration
    (and < max_iter)."""
    if max_iter <= 0:
        return 1.0
    k = (iteration // every) * every
    last_update = ((max_iter - 1) // every) * every  # the original stops refreshing at max_iter
    k = min(k, last_update)
    return (1.0 - k / max_iter) ** power


def step_decay_factor(iteration: int, start_decay_iter: int, step_size: int, gamma: float) -> float:
    """1 before ``start_decay_iter``, then ``gamma ** ((iteration - start) // step_size + 1)``."""
    if iteration < start_decay_iter:
        return 1.0
    return gamma ** ((iteration - start_decay_iter) // step_size + 1)


@dataclass
class Optimizers:
    """The three optimisers; ``backbone`` is None when the backbone is frozen in this schedule."""

    backbone: torch.optim.Optimizer | None
    generator: torch.optim.Adam
    discriminator: torch.optim.Adam

    def items(self) -> list[tuple[str, torch.optim.Optimizer]]:
        return [(name, opt) for name, opt in (("backbone", self.backbone), ("generator", self.generator),
                                              ("discriminator", self.discriminator)) if opt is not None]

    def zero_grad(self) -> None:
        for _, opt in self.items():
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.items():
            if name in state:
                opt.load_state_dict(state[name])


def backbone_param_groups(model: nn.Module, optim: OptimConfig, base_lr: float) -> list[dict]:
    """SGD parameter groups of the backbone, ASPP and contextual module.

    Each group carries ``name``, ``lr_multiplier`` and ``initial_lr``; empty groups are
    left out. With ``optim.train_context_gates`` False the gate conv's parameters are
    frozen (``requires_grad=False``) instead.
    """
    roles = model.param_groups()
    multipliers = optim.lr_multipliers
    groups = []
    for name in BACKBONE_GROUPS:
        params = [p for p in roles[name] if p.requires_grad]
        if name == "context_gates" and not optim.train_context_gates:
            for p in params:
                p.requires_grad_(False)
            continue
        if not params:
            continue
        multiplier = float(getattr(multipliers, name))
        weight_decay = optim.aspp_bias_weight_decay if name == "aspp_bias" else optim.backbone_weight_decay
        groups.append({"params": params, "name": name, "lr_multiplier": multiplier,
                       "initial_lr": multiplier * base_lr, "lr": multiplier * base_lr,
                       "weight_decay": weight_decay})
    return groups


def build_optimizers(model: nn.Module, optim: OptimConfig, schedule: ScheduleConfig) -> Optimizers:
    """The three optimisers of a schedule for ``model`` (a :class:`cagnet.models.CaGNet`).

    With ``schedule.update_backbone`` False there is no backbone optimiser and the
    backbone's parameters stay as they are (the original's ``update_back: f``).
    """
    backbone = None
    if schedule.update_backbone:
        groups = backbone_param_groups(model, optim, schedule.backbone_lr)
        if optim.backbone_optimizer == "adam":
            backbone = torch.optim.Adam(groups, lr=schedule.backbone_lr, betas=tuple(optim.adam_betas))
        else:
            backbone = torch.optim.SGD(groups, lr=schedule.backbone_lr, momentum=optim.backbone_momentum)
    elif not optim.train_context_gates:
        backbone_param_groups(model, optim, 0.0)  # still freeze the gate conv
    roles = model.param_groups()

    def adam(params, lr, weight_decay):
        return torch.optim.Adam([{"params": params, "initial_lr": lr, "lr_multiplier": 1.0}], lr=lr,
                                betas=tuple(optim.adam_betas), weight_decay=weight_decay)

    return Optimizers(
        backbone=backbone,
        generator=adam(roles["generator"], schedule.generator_lr, optim.generator_weight_decay),
        discriminator=adam(roles["discriminator"], schedule.discriminator_lr, optim.discriminator_weight_decay),
    )


def learning_rate_factors(schedule: ScheduleConfig, optim: OptimConfig, iteration: int) -> dict[str, float]:
    """Factor of each optimiser's base rate at ``iteration`` (0-based)."""
    g, d = schedule.generator_decay, schedule.discriminator_decay
    return {
        "backbone": poly_factor(iteration, schedule.iterations, optim.poly_power, schedule.backbone_poly_every),
        "generator": step_decay_factor(iteration, g.start_decay_iter, g.step_size, g.gamma),
        "discriminator": step_decay_factor(iteration, d.start_decay_iter, d.step_size, d.gamma),
    }


def apply_learning_rates(optimizers: Optimizers, schedule: ScheduleConfig, optim: OptimConfig,
                         iteration: int) -> dict[str, float]:
    """Set every group's ``lr = initial_lr * factor(iteration)``; returns the base rates
    (the schedule's rate times the factor, before any group multiplier)."""
    factors = learning_rate_factors(schedule, optim, iteration)
    base = {"backbone": schedule.backbone_lr, "generator": schedule.generator_lr,
            "discriminator": schedule.discriminator_lr}
    rates = {}
    for name, opt in optimizers.items():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factors[name]
        rates[name] = base[name] * factors[name]
    return rates
