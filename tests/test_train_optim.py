"""Optimiser groups (DeepLabV2 lr multipliers) and lr schedules against the original formulas."""
from __future__ import annotations

import pytest
import torch

from cagnet.config import OptimConfig, ScheduleConfig, StepDecay, load_train_config
from cagnet.models import build_cagnet
from cagnet.train.optim import (apply_learning_rates, build_optimizers, poly_factor, step_decay_factor)


@pytest.fixture(scope="module")
def model():
    return build_cagnet("small_reference", num_seen=15, num_unseen=5)


def _ids(params):
    return {id(p) for p in params}


def test_backbone_groups_and_multipliers(model):
    schedule = ScheduleConfig(iterations=100, backbone_lr=1e-3)
    optimizers = build_optimizers(model, OptimConfig(), schedule)
    groups = {g["name"]: g for g in optimizers.backbone.param_groups}
    assert list(groups) == ["backbone", "context", "context_gates", "aspp_weight", "aspp_bias"]
    expected = {"backbone": 1, "context": 5, "context_gates": 5, "aspp_weight": 10, "aspp_bias": 20}
    for name, multiplier in expected.items():
        assert groups[name]["lr"] == pytest.approx(multiplier * 1e-3)
        assert groups[name]["initial_lr"] == pytest.approx(multiplier * 1e-3)
    assert groups["aspp_bias"]["weight_decay"] == 0.0
    assert all(groups[n]["weight_decay"] == 5e-4 for n in ("backbone", "context", "context_gates", "aspp_weight"))
    assert optimizers.backbone.defaults["momentum"] == 0.9
    roles = model.param_groups()
    # the same parameters as the model's roles; frozen BN is not trained
    for name in expected:
        assert _ids(groups[name]["params"]) == _ids(p for p in roles[name] if p.requires_grad)
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if ".bn." in n)
    # the original's selection: convs of the ResNet ("layer"), contextual convs, ASPP weights / biases
    bodies = [model.backbone.stem, model.backbone.res2, model.backbone.res3, model.backbone.res4, model.backbone.res5]
    conv_weights = [m.weight for b in bodies for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert _ids(groups["backbone"]["params"]) == _ids(conv_weights)
    assert _ids(groups["aspp_weight"]["params"]) == _ids(b.weight for b in model.backbone.aspp.branches)
    assert _ids(groups["aspp_bias"]["params"]) == _ids(b.bias for b in model.backbone.aspp.branches)
    assert _ids(groups["context_gates"]["params"]) == {id(model.context.gates.weight)}
    # Adam for the generator and discriminator with the config's rates and weight decays
    assert isinstance(optimizers.generator, torch.optim.Adam)
    assert optimizers.generator.param_groups[0]["lr"] == pytest.approx(schedule.generator_lr)
    assert optimizers.generator.param_groups[0]["weight_decay"] == 0.0
    assert optimizers.discriminator.param_groups[0]["lr"] == pytest.approx(schedule.discriminator_lr)
    assert optimizers.discriminator.param_groups[0]["weight_decay"] == 5e-4
    assert _ids(optimizers.generator.param_groups[0]["params"]) == _ids(model.generator.parameters())
    assert _ids(optimizers.discriminator.param_groups[0]["params"]) == _ids(model.discriminator.parameters())


def test_original_gate_behaviour_and_frozen_backbone():
    model = build_cagnet("small_reference", num_seen=15, num_unseen=5)
    optimizers = build_optimizers(model, OptimConfig(train_context_gates=False), ScheduleConfig(iterations=10))
    assert "context_gates" not in [g["name"] for g in optimizers.backbone.param_groups]
    assert not model.context.gates.weight.requires_grad
    frozen = build_optimizers(build_cagnet("small_reference", num_seen=15, num_unseen=5), OptimConfig(),
                              ScheduleConfig(iterations=10, update_backbone=False))
    assert frozen.backbone is None
    assert [name for name, _ in frozen.items()] == ["generator", "discriminator"]


class OriginalPoly:
    """The original's stateful poly scheduler, written from its description."""

    def __init__(self, init_lr, every, power, max_iter):
        self.init_lr, self.every, self.power, self.max_iter = init_lr, every, power, max_iter
        self.now = 0
        self.lr = init_lr

    def step(self):
        self.now += 1
        if self.now % self.every == 0 and self.now < self.max_iter:
            self.lr = self.init_lr * (1 - self.now / self.max_iter) ** self.power


@pytest.mark.parametrize("max_iter, every", [(40000, 10), (6000, 10), (1000, 100), (95, 10), (37, 5)])
def test_poly_schedule_equals_the_original(max_iter, every):
    original = OriginalPoly(2.5e-4, every, 0.9, max_iter)
    for iteration in range(max_iter + 3):
        assert 2.5e-4 * poly_factor(iteration, max_iter, 0.9, every) == pytest.approx(original.lr, rel=1e-12), iteration
        original.step()


@pytest.mark.parametrize("start, step, gamma", [(10000, 5000, 0.71), (3000, 1000, 0.1), (5, 3, 0.5)])
def test_step_decay_equals_torch_lambda_lr_with_the_original_lambda(start, step, gamma):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    original = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: 1.0 if e < start else gamma ** ((e - start) // step + 1))
    for iteration in range(0, start + 4 * step + 2):
        assert step_decay_factor(iteration, start, step, gamma) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        original.step()


def test_apply_learning_rates_at_given_iterations():
    config = load_train_config("voc12")
    step1 = config.schedule("step1")
    model = build_cagnet("small_reference", num_seen=15, num_unseen=5)
    optimizers = build_optimizers(model, config.optim, step1)
    rates = apply_learning_rates(optimizers, step1, config.optim, 20005)
    poly = (1 - 20000 / 40000) ** 0.9
    assert rates["backbone"] == pytest.approx(2.5e-4 * poly)
    groups = {g["name"]: g["lr"] for g in optimizers.backbone.param_groups}
    assert groups["aspp_bias"] == pytest.approx(20 * 2.5e-4 * poly)
    assert groups["context"] == pytest.approx(5 * 2.5e-4 * poly)
    # lambda policy: start 10000, step 5000, gamma 0.71 -> at 20005: 0.71 ** 3
    assert rates["generator"] == pytest.approx(2e-4 * 0.71 ** 3)
    assert rates["discriminator"] == pytest.approx(2.5e-4 * 0.71 ** 3)
    rates = apply_learning_rates(optimizers, step1, config.optim, 9999)
    assert rates["generator"] == pytest.approx(2e-4)
    assert rates["backbone"] == pytest.approx(2.5e-4 * (1 - 9990 / 40000) ** 0.9)


def test_step_decay_dataclass_defaults_are_the_voc_step1_values():
    assert StepDecay() == StepDecay(start_decay_iter=10000, step_size=5000, gamma=0.71)


def test_a_zero_multiplier_freezes_its_groups_and_the_base_rate_is_still_reported():
    config = load_train_config("voc12", ["optim.lr_multipliers.backbone=0", "optim.lr_multipliers.aspp_weight=0",
                                         "optim.lr_multipliers.aspp_bias=0"])
    step1 = config.schedule("step1")
    model = build_cagnet("small_reference", num_seen=15, num_unseen=5)
    optimizers = build_optimizers(model, config.optim, step1)
    rates = apply_learning_rates(optimizers, step1, config.optim, 0)
    assert rates["backbone"] == pytest.approx(2.5e-4)
    groups = {g["name"]: g["lr"] for g in optimizers.backbone.param_groups}
    assert groups["backbone"] == 0.0 and groups["aspp_weight"] == 0.0 and groups["aspp_bias"] == 0.0
    assert groups["context"] == pytest.approx(5 * 2.5e-4)


def test_negative_multipliers_are_rejected():
    from cagnet.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.lr_multipliers.context"):
        load_train_config("voc12", ["optim.lr_multipliers.context=-1"])
