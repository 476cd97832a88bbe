"""SPNet and ZS3Net: shapes, the semantic projection, training phases, seeds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cagnet.config import load_train_config
from cagnet.data import load_dataset_info
from cagnet.errors import ConfigError
from cagnet.losses import classification_loss
from cagnet.models import NEGATIVE_LOGIT, SPNet, ZS3Net, model_config
from cagnet.train.baselines import (baseline_budget, build_spnet, held_out_dataset, self_train_zs3net,
                                    train_spnet, train_zs3net, training_ids)

pytestmark = pytest.mark.usefixtures("single_torch_thread")

S, U, E, C = 3, 2, 6, 8


def _config(**overrides):
    fields = dict(num_seen=S, num_unseen=U, embedding_dim=E, feature_dim=C, base_width=4)
    fields.update(overrides)
    return model_config("tiny", **fields)


def _table():
    return F.normalize(torch.randn(S + U, E, generator=torch.Generator().manual_seed(0)), dim=1)


def _image():
    return torch.randn(2, 3, 24, 32, generator=torch.Generator().manual_seed(1)) * 50


def test_spnet_logits_are_projections_on_the_fixed_embeddings():
    torch.manual_seed(0)
    model = SPNet(_config(), _table()).eval()
    image = _image()
    logits = model(image)
    assert logits.shape == (2, S + U + 1, 4, 5)
    feature = model.embed(image)
    assert feature.shape == (2, E, 4, 5)
    expected = (feature[:, None] * _table()[None, :, :, None, None]).sum(2)
    torch.testing.assert_close(logits[:, :S + U], expected, rtol=1e-5, atol=1e-3)
    assert (logits[:, S + U] == NEGATIVE_LOGIT).all()
    # the embeddings are a buffer, never a parameter
    assert "class_embeddings" in dict(model.named_buffers())
    assert all("embedding" not in name for name, _ in model.named_parameters())


def test_spnet_uses_only_the_seen_rows_in_training():
    torch.manual_seed(0)
    model = SPNet(_config(), _table())
    image = _image()
    model.train()
    train_logits = model(image)
    assert train_logits.shape == (2, S + U + 1, 4, 5)
    assert (train_logits[:, S:] == NEGATIVE_LOGIT).all()
    # the loss over all outputs equals the loss over the seen projections alone
    labels = torch.randint(0, S, (2, 4, 5), generator=torch.Generator().manual_seed(2))
    seen_only = model.project(model.embed(image), "seen")
    torch.testing.assert_close(classification_loss(train_logits, labels), classification_loss(seen_only, labels))
    # changing an unseen embedding row changes nothing in training mode
    table = _table()
    table[S:] = 5.0
    other = SPNet(_config(), table)
    other.load_state_dict({**model.state_dict(), "class_embeddings": table})
    other.train()
    torch.testing.assert_close(other(image), train_logits)
    with pytest.raises(ConfigError, match="does not match"):
        model.set_class_embeddings(torch.zeros(S, E))


def test_zs3net_shapes_and_generator():
    torch.manual_seed(0)
    model = ZS3Net(_config(), _table()).eval()
    image = _image()
    assert model(image).shape == (2, S + U + 1, 4, 5)
    feature = model.features(image)
    assert feature.shape == (2, C, 4, 5) and (feature >= 0).all()
    labels = torch.tensor([[[0, S], [S + U - 1, 1]]])
    fake = model.generate(labels)
    assert fake.shape == (1, C, 2, 2)
    noise = torch.zeros(1, E, 2, 2)
    same = model.generator(model.embed_labels(labels), noise)
    torch.testing.assert_close(same, model.generator(model.embed_labels(labels), noise))
    assert model.classify(fake).shape == (1, S + U + 1, 2, 2)


# ---------------------------------------------------------------------------------- training
@pytest.fixture()
def tiny_config(tiny_train_overrides):
    return load_train_config("tutorial", [*tiny_train_overrides, "schedules.step1.iterations=2",
                                          "schedules.mixed.iterations=4", "schedules.st.iterations=2",
                                          "schedules.st_mixed.iterations=2"])


def _parameters(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before, module):
    after = dict(module.named_parameters())
    return {name for name, value in before.items() if not torch.equal(value, after[name].detach())}


def test_budget_follows_the_cagnet_schedules(tiny_config):
    budget = baseline_budget(tiny_config)
    assert (budget.spnet, budget.segmentation, budget.generator, budget.classifier) == (2, 2, 2, 2)
    assert (budget.st_segmentation, budget.st_generator, budget.st_classifier) == (2, 1, 1)
    assert baseline_budget(tiny_config, scale=2.0).generator == 4
    assert baseline_budget(tiny_config, scale=0.0).spnet == 0
    with pytest.raises(ConfigError):
        baseline_budget(tiny_config, scale=-1.0)


def test_gradients_reach_the_gmmn_only_in_its_phase(tiny_config):
    start = train_zs3net(tiny_config, segmentation_iterations=0, generator_iterations=0, classifier_iterations=0)
    parts = {"backbone": start.backbone, "feature_norm": start.feature_norm, "classifier": start.classifier,
             "generator": start.generator}
    before = {name: _parameters(part) for name, part in parts.items()}

    def changed_parts(model):
        return {name for name in parts if _changed(before[name], getattr(model, name))}

    assert changed_parts(train_zs3net(tiny_config, model=start, segmentation_iterations=2, generator_iterations=0,
                                      classifier_iterations=0)) == {"backbone", "feature_norm", "classifier"}
    after_b = train_zs3net(tiny_config, model=start, segmentation_iterations=0, generator_iterations=2,
                           classifier_iterations=0)
    assert changed_parts(after_b) == {"generator"}
    # the frozen backbone's batch-norm statistics do not move either
    for key, value in start.state_dict().items():
        if not key.startswith("generator."):
            assert torch.equal(value, after_b.state_dict()[key]), key
    assert changed_parts(train_zs3net(tiny_config, model=start, segmentation_iterations=0, generator_iterations=0,
                                      classifier_iterations=2)) == {"classifier"}
    # the input model is left as it was
    assert changed_parts(start) == set()


def test_training_is_deterministic_per_seed(tiny_config):
    a = train_spnet(tiny_config, seed=5)
    b = train_spnet(tiny_config, seed=5)
    c = train_spnet(tiny_config, seed=6)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in a.state_dict())
    history = {}
    z1 = train_zs3net(tiny_config, seed=1, history=history)
    z2 = train_zs3net(tiny_config, seed=1)
    assert all(torch.equal(z1.state_dict()[k], z2.state_dict()[k]) for k in z1.state_dict())
    assert [len(history[k]) for k in ("segmentation", "generator", "classifier")] == [2, 2, 2]
    assert not z1.training and next(z1.parameters()).device.type == "cpu"


def test_self_training_finetunes_a_copy(tiny_config):
    model = train_zs3net(tiny_config, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = {}
    tuned = self_train_zs3net(tiny_config, model, seed=0, history=history)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    assert any(not torch.equal(before[k], tuned.state_dict()[k]) for k in before)
    assert set(history) == {"st_segmentation", "st_generator", "st_classifier"}
    with pytest.raises(ConfigError, match="top_p"):
        self_train_zs3net(tiny_config, model, top_p=99)


def test_held_out_images_are_the_last_training_images(tiny_config, tiny_train_benchmark):
    info = load_dataset_info(tiny_train_benchmark)
    ids = training_ids(tiny_config, info)
    held = held_out_dataset(tiny_config, info, 3)
    assert held.ids == ids[-3:] and held.split == "train"
    assert held[0]["image"].shape[-2:] == (tiny_config.data.test_size,) * 2
    assert int(held[0]["label"].max()) <= 255 and held.lut is not None
    with pytest.raises(ConfigError, match="held-out"):
        held_out_dataset(tiny_config, info, len(ids))
    model = build_spnet(tiny_config, info)
    assert model.config.num_seen == info.num_seen and model.config.num_unseen == info.num_unseen


def test_spnet_does_not_train_on_held_out_images(tiny_config, tiny_train_benchmark, monkeypatch):
    from cagnet.train import baselines

    seen_ids = []
    real_loader = baselines.training_loader

    def recording_loader(dataset, *args, **kwargs):
        seen_ids.append(list(dataset.ids))
        return real_loader(dataset, *args, **kwargs)

    monkeypatch.setattr(baselines, "training_loader", recording_loader)
    train_spnet(tiny_config, iterations=1, held_out=4)
    ids = training_ids(tiny_config, load_dataset_info(tiny_train_benchmark))
    assert seen_ids == [ids[:-4]]


def test_a_non_finite_loss_is_a_one_line_error(tiny_config, monkeypatch):
    from cagnet.errors import CagnetError
    from cagnet.train import baselines

    monkeypatch.setattr(baselines, "classification_loss", lambda logits, labels: logits.sum() * float("nan"))
    with pytest.raises(CagnetError, match="non-finite loss .* SPNet at iteration 1") as info:
        train_spnet(tiny_config, iterations=1)
    assert "\n" not in str(info.value)


def test_baseline_recipes_hold_what_the_baselines_read():
    from cagnet.config_io import to_dict
    from cagnet.train.baselines import baseline_recipe

    base = to_dict(load_train_config("tutorial"))
    for name in ("spnet", "zs3net", "zs3net_st"):
        recipe = baseline_recipe(base, name)
        # CaGNet's own settings do not enter: changing them does not retrain a baseline
        for override in ("model.semantic_norm=batch", "schedules.step1.losses.lambda_B_KLD=3",
                         "schedules.mixed.interval_step1=7", "model.generator_widths=[8,8,8,8,8]",
                         "runtime.num_threads=2", "data.preload=false"):
            assert baseline_recipe(to_dict(load_train_config("tutorial", [override])), name) == recipe, override
        # what the baselines read does
        for override in ("schedules.step1.backbone_lr=0.5", "runtime.seed=5", "model.base_width=4",
                         "pretrain.iterations=7", "data.crop_size=96"):
            assert baseline_recipe(to_dict(load_train_config("tutorial", [override])), name) != recipe, override
    mixed_only = to_dict(load_train_config("tutorial", ["schedules.mixed.gen_unseen_rate=30"]))
    assert baseline_recipe(mixed_only, "spnet") == baseline_recipe(base, "spnet")
    assert baseline_recipe(mixed_only, "zs3net") != baseline_recipe(base, "zs3net")
    assert baseline_recipe(base, "spnet", held_out=3) != baseline_recipe(base, "spnet")
