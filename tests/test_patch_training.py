"""CaGNetv2 in training: the patch classifier in every discriminator call, patch-wise step 2
(tiled label blocks, one noise vector per block, loss at the block centres), block sources
(pure blocks, a bank file), the grid check, and tiny patch-wise runs through the engine."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cagnet.config import LossWeights, load_train_config
from cagnet.config_io import to_dict
from cagnet.data.blocks import BlockSource, load_label_blocks, sample_distinct, save_label_blocks
from cagnet.diagnostics import _generated_accuracy
from cagnet.errors import ConfigError, DatasetError
from cagnet.losses import classification_loss
from cagnet.models import build_cagnet
from cagnet.train import steps
from cagnet.train.distributed import DistContext, wrap_parts
from cagnet.train.engine import train

S, U = 6, 3

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _model(patch_size=3, seed=0):
    torch.manual_seed(seed)
    net = build_cagnet("tiny", num_seen=S, num_unseen=U, feature_dim=16, context_width=16, embedding_dim=8,
                       generator_widths=(32, 32), generator_dropouts=(0.1, 0.1), discriminator_width=32,
                       patch_size=patch_size)
    net.set_class_embeddings(nn.functional.normalize(torch.randn(S + U, 8), dim=1))
    return net.train()


def _calls(module):
    """A list that collects the first positional argument of every forward call of ``module``."""
    seen = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    return seen


# ------------------------------------------------------------------------------ discriminate
def test_patch_head_discriminate_equals_a_call_per_map_in_one_call():
    model = _model().eval()
    features = [torch.rand(2, 16, 6, 6), torch.rand(2, 16, 3, 4), torch.rand(2, 16, 6, 6), torch.rand(1, 16, 5, 5)]
    calls = _calls(model.discriminator)
    together = steps.discriminate(model.discriminator, features)
    frozen = steps.discriminate_frozen(model.discriminator, features)
    # one call each (DDP: one forward per backward), with the maps as same-size batches
    assert len(calls) == 2 and isinstance(calls[0], list) and [tuple(x.shape) for x in calls[0]] == \
        [(4, 16, 6, 6), (2, 16, 3, 4), (1, 16, 5, 5)]
    for f, (score, logits), (score_f, logits_f) in zip(features, together, frozen):
        ref_score, ref_logits = model.discriminator(f)                 # the per-map reference
        torch.testing.assert_close(score, ref_score, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
        assert torch.equal(score, score_f) and torch.equal(logits, logits_f)
    # the pixel-packed call of the pixel-wise head would be wrong for a patch head
    pixels, shapes = steps._to_pixels(features)
    packed = steps._from_pixels(model.discriminator(pixels)[1], shapes)
    assert not torch.allclose(packed[0], together[0][1], atol=1e-3)


def test_pixelwise_head_keeps_the_packed_single_call():
    model = _model(patch_size=1).eval()
    features = [torch.rand(2, 16, 5, 5), torch.rand(2, 16, 3, 3)]
    calls = _calls(model.discriminator)
    together = steps.discriminate(model.discriminator, features)
    assert len(calls) == 1 and torch.is_tensor(calls[0]) and tuple(calls[0].shape) == (1, 16, 1, 2 * 25 + 2 * 9)
    pixels, shapes = steps._to_pixels(features)
    scores, logits = model.discriminator(pixels)
    for (s, lg), s_ref, lg_ref in zip(together, steps._from_pixels(scores, shapes), steps._from_pixels(logits, shapes)):
        assert torch.equal(s, s_ref) and torch.equal(lg, lg_ref)     # bit-identical to the packed call


def test_pixelwise_property_is_read_through_wrappers():
    model = _model()
    assert not steps.is_pixelwise(model.discriminator)
    wrapper = nn.Module()
    wrapper.module = model.discriminator                              # as DistributedDataParallel holds it
    assert not steps.is_pixelwise(wrapper)
    assert steps.is_pixelwise(_model(patch_size=1).discriminator)


def test_patch_step1_trains_all_parts_with_finite_losses():
    model = _model()
    parts = wrap_parts(model, DistContext(), train_backbone=True)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 40, 40, generator=generator) * 50
    labels = torch.randint(0, S, (2, 40, 40), generator=generator)
    calls = _calls(model.discriminator)
    out = steps.step1(parts, image, labels, LossWeights(lambda_D_cls_fake=0.25))
    out.total.backward()
    assert all(math.isfinite(v.item()) for v in out.logs.values())
    assert len(calls) == 2 and all(isinstance(c, list) for c in calls)   # trained + frozen call
    assert model.discriminator.patch_conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.generator.parameters())


# ------------------------------------------------------------------------------ patch-wise step 2
class _ShiftOffCentre(nn.Module):
    """The patch discriminator with ``shift`` added to one class's logit at the positions of
    ``where`` (a [h, w] bool mask)."""

    pixelwise = False

    def __init__(self, inner, where, shift, label=0):
        super().__init__()
        self.inner, self.where, self.shift, self.label = inner, where, shift, label

    def forward(self, features):
        out = []
        for score, logits in self.inner(features):
            logits = logits.clone()
            logits[:, self.label][:, self.where] += self.shift
            out.append((score, logits))
        return out


def _step2(model, blocks, seed=3, discriminator=None, weights=LossWeights(lambda_D_cls_fake_transfer=0.125),
           grid=(6, 6), batch=2):
    parts = wrap_parts(model, DistContext(), train_backbone=False)
    if discriminator is not None:
        parts.discriminator = discriminator
    torch.manual_seed(seed)
    return steps.step2(parts, batch, grid, steps.unseen_prior(S, U, 4.0), weights, device=torch.device("cpu"),
                       blocks=blocks)


def test_patch_step2_tiles_blocks_with_one_noise_vector_each(monkeypatch):
    model = _model()
    bank = ((torch.arange(9)[None] + torch.arange(4)[:, None]) % (S + U)).view(4, 3, 3)   # 4 distinct blocks
    blocks = BlockSource(3, bank, fuse_ratio=0)                          # a 6x6 grid draws all 4
    captured = {}
    real_loss = steps.patch_centre_loss

    def spy(logits, labels, patch_size):
        captured.setdefault("labels", labels)
        return real_loss(logits, labels, patch_size)

    monkeypatch.setattr(steps, "patch_centre_loss", spy)
    inputs = _calls(model.generator)
    out = _step2(model, blocks)
    labels, condition = captured["labels"], inputs[0]
    assert labels.shape == (2, 6, 6)
    for image in range(2):
        tiles = [labels[image, 3 * r:3 * r + 3, 3 * c:3 * c + 3] for r in range(2) for c in range(2)]
        matched = sorted(next(k for k in range(4) if torch.equal(t, bank[k])) for t in tiles)
        assert matched == [0, 1, 2, 3]                                 # each bank block once (no replacement)
        noise = condition[image, 8:]                                   # [embedding (8) ; latent (16)]
        for r in range(2):
            for c in range(2):
                block = noise[:, 3 * r:3 * r + 3, 3 * c:3 * c + 3].reshape(16, 9)
                assert torch.equal(block, block[:, :1].expand(16, 9))  # one vector per block
        assert not torch.equal(noise[:, 0, 0], noise[:, 0, 3])
    assert torch.equal(condition[:, :8], model.embed_labels(labels, "all"))
    centres = labels[:, 1::3, 1::3]
    assert out.logs["unseen_fraction"].item() == pytest.approx((centres >= S).float().mean().item())


def test_patch_step2_loss_is_at_the_block_centres_only():
    model = _model()
    centre = torch.zeros(6, 6, dtype=torch.bool)
    centre[1::3, 1::3] = True
    blocks = BlockSource(3)
    reference = _step2(model, blocks).logs["cls_fake"]
    # a class's logit raised by 50 everywhere but at the centres: the loss does not move
    off = _step2(model, blocks, discriminator=_ShiftOffCentre(model.discriminator, ~centre, 50.0)).logs["cls_fake"]
    assert torch.equal(off, reference)
    # the same at the centres changes it
    on = _step2(model, blocks, discriminator=_ShiftOffCentre(model.discriminator, centre, 50.0)).logs["cls_fake"]
    assert abs(on.item() - reference.item()) > 1.0
    # and it is the cross-entropy over the centres
    assert reference.item() > 0


def test_non_centre_labels_reach_the_centres_only_through_the_patch_conv():
    """With the 3x3 conv set to the identity, a centre's logits depend on its own pixel only, so
    banks that differ off the centres give the same loss; the trained 3x3 conv sees them."""
    bank = torch.full((4, 3, 3), S)                                     # unseen centre, seen borders
    other = bank.clone()
    other[:, 0, 0] = S + 2                                               # another label off the centre
    changed_centre = bank.clone()
    changed_centre[:, 1, 1] = 1
    model = _model()
    losses = {name: _step2(model, BlockSource(3, b, fuse_ratio=0)).logs["cls_fake"]
              for name, b in (("bank", bank), ("other", other), ("centre", changed_centre))}
    assert not torch.equal(losses["bank"], losses["other"])             # the 3x3 head sees the block
    model.discriminator.init_patch_conv_as_identity()
    losses = {name: _step2(model, BlockSource(3, b, fuse_ratio=0)).logs["cls_fake"]
              for name, b in (("bank", bank), ("other", other), ("centre", changed_centre))}
    torch.testing.assert_close(losses["bank"], losses["other"], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(losses["bank"], losses["centre"])


def test_patch_step2_trains_the_classifier_and_the_generator_when_asked():
    model = _model()
    out = _step2(model, BlockSource(3), weights=LossWeights(lambda_D_cls_fake_transfer=1, lambda_G_cls_transfer=1))
    out.total.backward()
    assert out.trains_generator and not out.trains_backbone
    assert model.discriminator.patch_conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.generator.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())


def test_step2_needs_a_block_source_exactly_for_a_patch_model():
    with pytest.raises(ConfigError, match="needs a block source"):
        _step2(_model(), None)
    with pytest.raises(ConfigError, match="would be ignored"):
        _step2(_model(patch_size=1), BlockSource(3))
    with pytest.raises(ConfigError, match=r"7x7 is not a multiple of the patch size 3"):
        _step2(_model(), BlockSource(3), grid=(7, 7))


def test_pixelwise_step2_is_unchanged():
    """patch_size 1: labels per pixel from the prior, then the latent, the loss over every pixel."""
    model = _model(patch_size=1)
    out = _step2(model, None, grid=(5, 5))
    torch.manual_seed(3)
    labels = steps.sample_step2_labels(steps.unseen_prior(S, U, 4.0), (2, 5, 5), torch.device("cpu"))
    latent = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        fake = model.generate(model.embed_labels(labels, "all"), latent)
        _, logits = model.discriminator(steps._to_pixels([fake])[0])
    logits = steps._from_pixels(logits, [tuple(fake.shape)])[0]
    assert torch.equal(out.logs["cls_fake"], classification_loss(logits, labels).float())


# ------------------------------------------------------------------------------ block sources
def test_pure_blocks_are_uniform_and_follow_the_prior():
    torch.manual_seed(0)
    prior = steps.unseen_prior(S, U, 4.0)
    drawn = BlockSource(3).draw(50, (12, 12), prior.float())            # [50, 16, 3, 3]
    assert drawn.shape == (50, 16, 3, 3) and drawn.dtype == torch.int64
    assert torch.equal(drawn, drawn[..., :1, :1].expand_as(drawn))
    counts = torch.bincount(drawn[..., 0, 0].flatten(), minlength=S + U).double()
    n = counts.sum().item()
    for k in range(S + U):
        p = prior[k].item()
        assert abs(counts[k].item() - n * p) < 5 * math.sqrt(n * p * (1 - p)), k


@pytest.mark.parametrize("direct_limit", [1 << 18, 0])            # keys' top-k, Floyd's algorithm
def test_distinct_draws_are_without_replacement_and_uniform(direct_limit):
    torch.manual_seed(0)
    rows = sample_distinct(400, 6, 20, direct_limit=direct_limit)
    assert rows.shape == (400, 6) and rows.min() >= 0 and rows.max() < 20
    assert all(len(set(r.tolist())) == 6 for r in rows)
    counts = torch.bincount(rows.flatten(), minlength=20).double()      # each index ~ 400 * 6 / 20
    assert (counts - 120).abs().max() < 5 * math.sqrt(120)
    first = torch.bincount(rows[:, 0], minlength=20).double()           # the order is random too
    assert (first - 20).abs().max() < 5 * math.sqrt(20)
    torch.manual_seed(0)
    assert torch.equal(sample_distinct(400, 6, 20, direct_limit=direct_limit), rows)   # from the RNG only
    assert sorted(sample_distinct(1, 20, 20, direct_limit=direct_limit)[0].tolist()) == list(range(20))
    with pytest.raises(DatasetError, match="cannot draw 21 distinct items from 20"):
        sample_distinct(1, 21, 20)


def test_bank_blocks_mix_with_pure_blocks_at_the_fuse_ratio():
    torch.manual_seed(0)
    bank = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]).expand(40, 3, 3)   # never uniform
    source = BlockSource(3, bank.contiguous(), fuse_ratio=3)             # pool: 40 bank + 120 pure slots
    drawn = source.draw(200, (12, 12), steps.unseen_prior(S, U, 0.0).float())
    from_bank = (drawn == bank[0]).flatten(2).all(2)
    uniform = (drawn == drawn[..., :1, :1]).flatten(2).all(2)
    assert torch.equal(from_bank, ~uniform)                              # a bank block or a pure one
    share = from_bank.float().mean().item()                              # hypergeometric: 1 / (1 + 3)
    assert share == pytest.approx(0.25, abs=0.02)
    assert source.pool_size == 160 and source.check_grid((12, 12)) == 16
    with pytest.raises(DatasetError, match=r"fewer than the 36 blocks each image of a 18x18 grid"):
        BlockSource(3, bank[:4].contiguous(), fuse_ratio=3, name="tiny.pt").check_grid((18, 18))


# ------------------------------------------------------------------------------ bank files
@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_bank_file_round_trip(tmp_path, suffix):
    blocks = torch.randint(0, S + U, (7, 3, 3))
    path = save_label_blocks(tmp_path / f"bank{suffix}", blocks, S + U)
    loaded = load_label_blocks(path, S + U, 3)
    assert loaded.dtype == torch.uint8 and torch.equal(loaded.long(), blocks)


def _write(path, value):
    if path.suffix == ".npy":
        np.save(path, value, allow_pickle=True)
    else:
        torch.save(value, path)
    return path


@pytest.mark.parametrize("name, value, message", [
    ("flat.pt", torch.zeros(5, 9, dtype=torch.int64), r"expected a tensor \[B, s, s\] of square blocks, got shape \[5, 9\]"),
    ("float.npy", np.zeros((2, 3, 3), np.float32), "expected integer class labels"),
    ("range.pt", torch.full((2, 3, 3), S + U), rf"labels \[{S + U}\] outside the class range 0..{S + U - 1}"),
    ("ignored.npy", np.full((2, 3, 3), 255, np.int64), r"labels \[255\] outside the class range"),
    ("side.pt", torch.zeros(2, 5, 5, dtype=torch.int64), "blocks of 5x5, but the patch size is 3"),
    ("empty.pt", torch.zeros(0, 3, 3, dtype=torch.int64), "holds no label blocks"),
    ("dict.pt", {"blocks": torch.zeros(2, 3, 3)}, "expected a tensor"),
    ("object.npy", np.array([{"a": 1}], dtype=object), "cannot read a bank of label blocks"),
])
def test_bad_bank_files_are_one_line_errors_naming_the_file(tmp_path, name, value, message):
    path = _write(tmp_path / name, value)
    with pytest.raises(DatasetError, match=message) as info:
        load_label_blocks(path, S + U, 3)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_or_misnamed_bank_file(tmp_path):
    with pytest.raises(DatasetError, match="bank of label blocks not found"):
        load_label_blocks(tmp_path / "nope.pt")
    with pytest.raises(DatasetError, match=r"is a \.pt or \.npy file"):
        load_label_blocks(tmp_path / "bank.txt")


# ------------------------------------------------------------------------------ diagnostics
def test_generated_accuracy_of_a_patch_classifier_scores_whole_blocks():
    model = _model().eval()
    scores = _generated_accuracy(model, S, S + U, 4, 0, torch.device("cpu"))
    # reference: each block its own map, the latent drawn as [K * n, C] from the same seed
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(S + U).repeat_interleave(4)
    latent = torch.randn(labels.numel(), 16, 1, 1, generator=rng)
    hits = []
    for label, noise in zip(labels, latent):
        block = torch.full((1, 3, 3), int(label))
        with torch.no_grad():
            fake = model.generate(model.embed_labels(block, "all"), noise[None].expand(1, 16, 3, 3))
            hits.append(int(model.classify(fake)[0, :S + U, 1, 1].argmax()) == int(label))
    hits = torch.tensor(hits)
    assert scores["generated_seen_accuracy"] == pytest.approx(hits[labels < S].float().mean().item())
    assert scores["generated_unseen_accuracy"] == pytest.approx(hits[labels >= S].float().mean().item())


# ------------------------------------------------------------------------------ configs
def test_block_source_keys_are_read_only_where_they_act():
    with pytest.raises(ConfigError, match=r"^schedules\.mixed\.block_source: 'bank' would be ignored: "
                                          r"model\.patch_size is 1"):
        load_train_config("tutorial", ["schedules.mixed.block_source=bank", "schedules.mixed.bank_path=b.pt"])
    with pytest.raises(ConfigError, match=r"^schedules\.step1\.block_source: 'bank' would be ignored: only mixed "
                                          r"and st_mixed read it"):
        load_train_config("tutorial_pa3", ["schedules.step1.block_source=bank"])
    with pytest.raises(ConfigError, match=r"^schedules\.st_mixed\.bank_path: needed with block_source: bank"):
        load_train_config("tutorial", ["model.patch_size=3", "schedules.st_mixed.block_source=bank"])
    # with a patches section, bank_path null is the config's own bank
    assert load_train_config("tutorial_pa3").schedule("st_mixed").bank_path is None
    with pytest.raises(ConfigError, match=r"^schedules\.mixed\.fuse_ratio: 2 would be ignored: block_source is pure"):
        load_train_config("tutorial_pa3", ["schedules.mixed.block_source=pure", "schedules.mixed.fuse_ratio=2"])
    with pytest.raises(ConfigError, match=r"^schedules\.mixed\.fuse_ratio: must be >= 0"):
        load_train_config("tutorial_pa3", ["schedules.mixed.bank_path=b.pt", "schedules.mixed.fuse_ratio=-1"])
    config = load_train_config("voc12_pa3", ["schedules.mixed.block_source=pure"])
    assert config.schedule("mixed").block_source == "pure" and config.schedule("st_mixed").block_source == "bank"


def test_tutorial_pa3_is_the_tutorial_made_patch_wise():
    tutorial, patch = to_dict(load_train_config("tutorial")), to_dict(load_train_config("tutorial_pa3"))
    assert patch["model"]["patch_size"] == 3 and patch["data"]["crop_size"] == 136
    tutorial["model"]["patch_size"], tutorial["data"]["crop_size"], tutorial["name"] = 3, 136, "tutorial_pa3"
    for schedule in ("mixed", "st_mixed"):   # the blocks of the config's own bank (section patches)
        assert patch["schedules"][schedule]["bank_path"] is None
        tutorial["schedules"][schedule]["block_source"] = "bank"
    assert patch.pop("patches") is not None and tutorial.pop("patches") is None
    assert patch == tutorial


@pytest.mark.parametrize("name", ["tutorial_pa3", "voc12_pa3", "context_pa3", "cocostuff_pa3"])
def test_patch_configs_give_whole_blocks_to_every_step2_crop(name):
    config = load_train_config(name)
    model = build_cagnet(config.model, num_seen=2, num_unseen=1) if name == "tutorial_pa3" else None
    for schedule in ("mixed", "st_mixed"):
        crop = config.schedule(schedule).crop_size or config.data.crop_size
        if model is not None:
            assert steps.check_patch_grid(model, crop, "crop") == (18, 18)
        else:
            assert crop == 376          # 48x48 at output stride 8 (the DeepLabV2 grid is crop // 8 + 1)


# ------------------------------------------------------------------------------ engine
def _patch_config(overrides, *extra):
    return load_train_config("tutorial", [*overrides, "model.patch_size=3", "data.crop_size=40",   # 6x6 grid
                                          "runtime.sample_images=0", "data.test_limit=4", *extra])


@pytest.fixture()
def bank_file(tmp_path):
    torch.manual_seed(5)
    return save_label_blocks(tmp_path / "bank.pt", torch.randint(0, 16, (3, 3, 3)), 16)   # 12 + 4 classes


def test_patch_schedules_run_through_the_engine(tiny_train_overrides, tmp_path, bank_file):
    short = [f"schedules.{s}.iterations=2" for s in ("step1", "mixed", "st", "st_mixed")]
    blocks = [f"schedules.{s}.{k}" for s in ("mixed", "st_mixed") for k in ("interval_step1=1", "interval_step2=1")]
    config = _patch_config(tiny_train_overrides, *short, *blocks, "schedules.mixed.block_source=bank",
                           f"schedules.mixed.bank_path={bank_file}", "schedules.mixed.fuse_ratio=1")
    for schedule in ("step1", "mixed", "st", "st_mixed"):
        result = train(config, schedule, tmp_path / schedule, progress=False, verbose=False)
        assert result.completed and result.scores is not None and result.scores["num_images"] == 4
        assert result.model.discriminator.patch_size == 3
        assert all(math.isfinite(p.detach().abs().sum().item()) for p in result.model.parameters())
    from cagnet.train.runs import read_jsonl
    assert [r["step"] for r in read_jsonl(tmp_path / "st_mixed" / "log.jsonl")] == ["step1", "step2"]


def test_patch_mixed_resume_gives_the_same_weights(tiny_train_overrides, tmp_path, bank_file):
    config = _patch_config(tiny_train_overrides, "schedules.step1.iterations=1", "schedules.mixed.iterations=4",
                           "schedules.mixed.interval_step1=1", "schedules.mixed.interval_step2=1",
                           "schedules.mixed.block_source=bank", f"schedules.mixed.bank_path={bank_file}",
                           "schedules.mixed.fuse_ratio=2")
    train(config, "step1", tmp_path / "step1", progress=False, verbose=False)
    straight = train(config, "mixed", tmp_path / "mixed", progress=False, verbose=False)
    train(config, "mixed", tmp_path / "mixed2", progress=False, verbose=False, stop_at=3,
          init_model=tmp_path / "step1" / "checkpoint.pt")
    resumed = train(config, "mixed", tmp_path / "mixed2", progress=False, verbose=False, resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert "discriminator.patch_conv.weight" in a


def test_patch_setup_errors_are_one_line(tiny_train_overrides, tmp_path):
    config = _patch_config(tiny_train_overrides, "data.crop_size=48")                # 7x7 grid
    with pytest.raises(ConfigError) as info:
        train(config, "mixed", tmp_path / "grid", progress=False, verbose=False, init_model=None)
    message = str(info.value)
    assert message == ("data.crop_size: crop size 48 gives a 7x7 feature grid, not a multiple of model.patch_size 3 "
                       "(patch-wise step 2 tiles 3x3 label blocks); e.g. crop 64 gives 9x9")
    assert not (tmp_path / "grid").exists()                                           # nothing written
    bad = _write(tmp_path / "bad.pt", torch.full((4, 3, 3), 99))
    config = _patch_config(tiny_train_overrides, "schedules.mixed.block_source=bank", f"schedules.mixed.bank_path={bad}")
    with pytest.raises(DatasetError) as info:
        train(config, "mixed", tmp_path / "bank", progress=False, verbose=False)
    message = str(info.value)
    assert message.startswith(f"schedules.mixed.bank_path: {bad}: label blocks: labels [99] outside the class range")
    assert "\n" not in message


def test_bank_path_null_trains_on_the_configs_own_bank(tiny_train_overrides, tmp_path):
    """``block_source: bank`` without a file: the engine builds the config's cached bank (section
    ``patches``) and tiles its blocks; the run's recipe keeps ``bank_path: null``."""
    from cagnet.patches import cached_bank_path
    from cagnet.train.runs import read_jsonl

    tiny_patches = ["patches.width=8", "patches.num_layers=2", "patches.epochs=1", "patches.batch_size=4",
                    "patches.num_blocks=48", "patches.blocks_per_iteration=256", "patches.max_iterations=50",
                    f"patches.cache_dir={tmp_path / 'banks'}"]
    config = _patch_config(tiny_train_overrides, "schedules.step1.iterations=1", "schedules.mixed.iterations=2",
                           "schedules.mixed.interval_step1=1", "schedules.mixed.interval_step2=1",
                           "schedules.mixed.block_source=bank", *tiny_patches)
    assert config.schedule("mixed").bank_path is None
    bank = cached_bank_path(config)
    assert not bank.exists()
    train(config, "step1", tmp_path / "step1", progress=False, verbose=False)
    result = train(config, "mixed", tmp_path / "mixed", progress=False, verbose=False,
                   init_model=tmp_path / "step1" / "checkpoint.pt")
    assert result.completed and bank.is_file()
    assert [r["step"] for r in read_jsonl(tmp_path / "mixed" / "log.jsonl")] == ["step1", "step2"]
    assert "bank_path: null" in (tmp_path / "mixed" / "config.yaml").read_text()
