"""The ``patches`` command of CaGNetv2: the label-block PixelCNN trained on a config's training labels
and the bank sampled from it: deterministic, cached by recipe, the original's sampling rules, a
training condition that does not reveal the predicted label, one-line errors, nothing half-written."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cagnet import patches, viz
from cagnet.cli import build_parser, main
from cagnet.config import PatchesConfig, load_train_config
from cagnet.data.blocks import save_label_blocks
from cagnet.data.datasets import SegmentationDataset, load_dataset_info
from cagnet.data.transforms import resize_labels
from cagnet.errors import ConfigError, DatasetError
from cagnet.models import LabelBlockPixelCNN, block_condition_classes

pytestmark = pytest.mark.usefixtures("single_torch_thread")

S, K = 12, 16   # the benchmark's seen classes and all classes


@pytest.fixture()
def overrides(tiny_train_benchmark, tmp_path):
    """tutorial_pa3 on the tiny benchmark (64 px crops: a 9x9 grid of 3x3 blocks), a tiny PixelCNN
    (width 8, 2 layers, 2 epochs) and a small bank, cached in this test's folder."""
    return [f"data.root={tiny_train_benchmark}", "data.synthetic=null", "data.crop_size=64", "runtime.device=cpu",
            "runtime.num_threads=1", "patches.width=8", "patches.num_layers=2", "patches.epochs=2",
            "patches.batch_size=4", "patches.num_blocks=48", "patches.blocks_per_iteration=256",
            "patches.max_iterations=100", f"patches.cache_dir={tmp_path / 'cache'}"]


def _config(overrides, *extra):
    return load_train_config("tutorial_pa3", [*overrides, *extra])


def _bank(result: patches.BankResult) -> torch.Tensor:
    return torch.load(result.path, weights_only=True).long()


def _one_line(error) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------------------ determinism, cache
def test_the_bank_is_deterministic_from_the_seed(overrides, tmp_path):
    config = _config(overrides)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first = patches.build_bank(config, tmp_path / "a.pt", progress=False)
    assert torch.equal(torch.rand(3), before)             # the caller's random stream is left alone
    second = patches.build_bank(config, tmp_path / "b.pt", progress=False)
    assert torch.equal(_bank(first), _bank(second))
    assert first.info["pixelcnn"]["loss_curve"] == second.info["pixelcnn"]["loss_curve"]
    # (another seed gives another bank: test_the_command_line_makes_reuses_and_refuses)


def test_a_finished_bank_is_reused_and_force_makes_it_again(overrides, tmp_path):
    config = _config(overrides)
    made = patches.make_bank(config, progress=False)
    assert not made.reused and made.path.parent == tmp_path / "cache"
    assert made.path == patches.cached_bank_path(config)
    assert made.path.name.startswith("label_blocks_synthetic_s3_")
    files = patches.companion_paths(made.path)
    assert all(path.is_file() for path in files.values())
    assert json.loads(files["info"].read_text())["recipe"] == made.info["recipe"]
    stamp = made.path.stat().st_mtime_ns
    again = patches.make_bank(config, progress=False)
    assert again.reused and again.path == made.path and made.path.stat().st_mtime_ns == stamp
    assert patches.ensure_bank(config, progress=False) == made.path
    # every value that decides the bank is in its name; the cache folder is not
    assert patches.cached_bank_path(_config(overrides, "patches.threshold=6")) != made.path
    assert patches.cached_bank_path(_config(overrides, "patches.epochs=3")) != made.path
    assert patches.cached_bank_path(_config(overrides, "data.crop_size=88")) != made.path      # 12x12 grid
    moved = patches.cached_bank_path(_config(overrides, f"patches.cache_dir={tmp_path / 'elsewhere'}"))
    assert moved.name == made.path.name
    forced = patches.make_bank(config, force=True, progress=False)
    assert not forced.reused and made.path.stat().st_mtime_ns != stamp
    assert torch.equal(_bank(forced), _bank(made))


def test_an_interrupted_build_leaves_no_finished_bank(overrides, monkeypatch):
    config = _config(overrides)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(patches, "sample_bank", interrupt)
    with pytest.raises(KeyboardInterrupt):
        patches.make_bank(config, progress=False)
    cache = patches.cached_bank_path(config).parent
    assert not cache.exists() or not any(cache.iterdir())        # nothing written before the end
    monkeypatch.undo()
    finished = patches.make_bank(config, progress=False)
    monkeypatch.setattr(patches, "atomic_write_text", interrupt)  # Ctrl-C while the files are replaced
    with pytest.raises(KeyboardInterrupt):
        patches.make_bank(config, force=True, progress=False)
    assert not patches.companion_paths(finished.path)["info"].exists()
    assert [p.name for p in finished.path.parent.iterdir() if p.name.startswith(".")] == []   # no temporaries
    monkeypatch.undo()
    assert not patches.make_bank(config, progress=False).reused   # not taken for a finished bank


# ------------------------------------------------------------------------------ the training data
def test_training_labels_are_crops_resized_to_the_step2_grid(overrides, tiny_train_benchmark):
    config = _config(overrides)
    setup = patches.prepare_bank(config)
    assert setup.grid == (9, 9) and setup.crop_size == 64 and setup.gen_unseen_rate == 9
    grids = patches.training_label_grids(config, setup)
    info = load_dataset_info(tiny_train_benchmark)
    dataset = SegmentationDataset(tiny_train_benchmark, "train", info=info)
    assert grids.shape == (len(dataset), 9, 9)
    for index in range(len(dataset)):    # scale 1, crop = image: the label map, flipped or not, resized
        label = dataset[index]["label"]
        options = [resize_labels(label, (9, 9)), resize_labels(label.flip(-1), (9, 9))]
        assert any(torch.equal(grids[index], option) for option in options)
    assert int(grids[grids != 255].max()) < S                   # unseen classes are ignored in training


# ------------------------------------------------------------------------------ the condition
def _tiny_pixelcnn(seed: int = 0) -> LabelBlockPixelCNN:
    torch.manual_seed(seed)
    model = LabelBlockPixelCNN(5, embedding_dim=6, width=8, num_layers=2)
    model.set_class_embeddings(torch.randn(5, 6))
    return model.eval()


@pytest.mark.parametrize("form", ["block_class", "leaking"])
def test_the_training_condition_does_not_reveal_the_predicted_label(form):
    model = _tiny_pixelcnn()
    # a clear majority (class 1 on 6 of 9 positions); the other positions change to labels 2..4
    blocks = torch.tensor([[[1, 1, 2], [1, 3, 1], [1, 4, 1]]] * 3)
    for position in (2, 4, 7):
        row, col = divmod(position, 3)
        changed = blocks.clone()
        changed[:, row, col] = torch.tensor([2, 3, 4])
        condition = patches.training_condition(blocks, blocks, form, 5)
        changed_condition = patches.training_condition(changed, changed, form, 5)
        with torch.no_grad():
            difference = (model(changed, changed_condition) - model(blocks, condition))[:, :, row, col].abs().max()
        if form == "block_class":   # one class per block, the same for all positions: the label at (r, c)
            assert condition.shape == (3,) and torch.equal(condition, changed_condition)   # does not reach it
            assert torch.equal(condition, block_condition_classes(blocks, 5))
            assert difference < 1e-6
        else:                       # the original's: each position reads its own label in the condition
            assert difference > 1e-3
    with pytest.raises(ConfigError, match="patches.condition"):
        patches.training_condition(blocks, blocks, "own_label", 5)


def test_the_leaking_condition_only_lowers_the_training_loss(overrides, tmp_path):
    fast = ("patches.epochs=10", "patches.lr=0.02", "patches.num_blocks=8")
    fixed = patches.build_bank(_config(overrides, *fast), tmp_path / "fixed.pt", progress=False)
    leaking = patches.build_bank(_config(overrides, *fast, "patches.condition=leaking"),
                                 tmp_path / "leaking.pt", progress=False)
    # reading the answer from the condition is easier than predicting it from the positions before it
    assert leaking.info["pixelcnn"]["final_loss"] < 0.7 * fixed.info["pixelcnn"]["final_loss"]


# ------------------------------------------------------------------------------ sampling rules
class FixedLogits(torch.nn.Module):
    """A stand-in PixelCNN: the same logits at every position (class 0 strongly preferred)."""

    num_labels = 6

    def forward(self, blocks, condition):
        logits = torch.zeros(blocks.shape[0], self.num_labels, *blocks.shape[1:])
        logits[:, 0] = 8.0
        return logits


def _draw(count=4000, **settings):
    rules = PatchesConfig(**settings)
    condition = torch.full((count,), 5)
    return patches.sample_pixelcnn_blocks(FixedLogits(), condition, 3, rules, num_seen=4,
                                          generator=torch.Generator().manual_seed(0))


def test_sampling_keeps_the_first_positions_and_draws_as_the_original():
    blocks = _draw(first_unseen=5).flatten(1)
    assert (blocks[:, :5] == 5).all()
    p0 = torch.softmax(torch.tensor([8.0, 0, 0, 0, 0, 0]), 0)
    second = torch.exp(p0[0]) / torch.exp(p0).sum()           # the original's softmax of probabilities
    assert (blocks[:, 5:] == 0).float().mean() == pytest.approx(float(second), abs=0.02)
    single = _draw(first_unseen=5, second_softmax=False).flatten(1)
    assert (single[:, 5:] == 0).float().mean() == pytest.approx(float(p0[0]), abs=0.01)
    # top-k of one class: the largest probability; p_base lifts the unseen classes (4, 5) above it
    assert (_draw(first_unseen=2, topk=1 / 6).flatten(1)[:, 2:] == 0).all()
    lifted = _draw(first_unseen=2, topk=1 / 6, p_base=12.0, second_softmax=False).flatten(1)[:, 2:]
    assert ((lifted == 4) | (lifted == 5)).all()
    # the first two classes: 0 and one of the others, never a third
    assert set(_draw(first_unseen=0, topk=2 / 6).unique().tolist()) <= {0, 1, 2, 3, 4, 5}
    assert _draw(first_unseen=0, topk=2 / 6).unique().numel() == 2


@pytest.mark.parametrize("threshold, cc_max", [(7, 3), (6, 2)])
def test_the_rules_hold_on_every_pixelcnn_block_of_the_bank(overrides, tmp_path, threshold, cc_max):
    config = _config(overrides, "patches.pure_iteration_share=0.0", f"patches.threshold={threshold}",
                     f"patches.cc_max={cc_max}")
    result = patches.build_bank(config, tmp_path / "bank.pt", progress=False)
    bank = _bank(result)
    flat = bank.flatten(1)
    assert bank.shape == (48, 3, 3) and result.info["sampling"]["pure_iterations"] == 0
    assert ((flat >= S).sum(1) >= threshold).all()
    classes = F.one_hot(flat, K).amax(1).sum(1)
    assert (classes <= cc_max).all()
    assert (flat[:, :5] == flat[:, :1]).all() and (flat[:, 0] >= S).all()   # the first 5: one unseen class
    stats = result.info["statistics"]
    assert stats["classes_per_block"] == {str(k): int((classes == k).sum()) for k in range(1, 10)}
    assert stats["unseen_pixels_per_block"] == {str(k): int(((flat >= S).sum(1) == k).sum()) for k in range(10)}
    assert sum(stats["class_shares"].values()) == pytest.approx(1.0)
    assert result.info["sampling"]["pixelcnn_blocks_kept"] >= 48


def test_pure_iterations_always_and_never(overrides, tmp_path):
    always = patches.build_bank(_config(overrides, "patches.pure_iteration_share=1.0"), tmp_path / "a.pt",
                                progress=False)
    flat = _bank(always).flatten(1)
    assert (flat == flat[:, :1]).all()                             # uniform blocks only
    assert (flat[:, 0] < S).any() and (flat[:, 0] >= S).any()      # of the step-2 prior: seen and unseen
    assert always.info["sampling"]["pixelcnn_blocks_drawn"] == 0
    assert always.info["statistics"]["pure_iteration_blocks"] == 48
    never = patches.build_bank(_config(overrides, "patches.pure_iteration_share=0.0"), tmp_path / "n.pt",
                               progress=False)
    assert never.info["sampling"]["pure_iterations"] == 0 and never.info["statistics"]["pure_iteration_blocks"] == 0
    assert ((_bank(never) >= S).flatten(1).sum(1) >= 7).all()     # no seen one-class block


def test_the_original_configs_carry_its_sampling_rules():
    for name, share, epochs in (("voc12_pa3", 0.1, 6), ("context_pa3", 0.0, 1), ("cocostuff_pa3", 0.0, 5)):
        settings = load_train_config(name).patches
        assert (settings.first_unseen, settings.threshold, settings.cc_max, settings.topk, settings.p_base) == \
            (5, 7, 3, 1.0, 0.0)
        assert (settings.width, settings.num_layers, settings.kernel_size, settings.batch_size) == (64, 8, 7, 6)
        assert settings.second_softmax and settings.lr == pytest.approx(1e-6)
        assert settings.pure_iteration_share == share and settings.epochs == epochs
        assert settings.blocks_per_iteration == 16384
    assert load_train_config("tutorial_pa3").patches is not None and load_train_config("tutorial").patches is None


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("override, message", [
    ("patches.topk=0", "patches.topk: must be in (0, 1]"),
    ("patches.kernel_size=4", "patches.kernel_size: must be odd"),
    ("patches.pure_iteration_share=1.5", "patches.pure_iteration_share: must be in [0, 1]"),
    ("patches.dropout=1", "patches.dropout: must be in [0, 1)"),
    ("patches.condition=own_label", "patches.condition: expected one of"),
    ("patches.num_blocks=0", "patches.num_blocks: must be > 0"),
    ("patches.treshold=3", "unknown config key 'patches.treshold' (did you mean 'threshold'?)"),
])
def test_bad_patches_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_train_config("tutorial_pa3", [override])
    assert message in _one_line(error)


def test_bad_setups_are_one_line_errors(overrides):
    cases = [
        (["patches.first_unseen=10"], "patches.first_unseen: 10 exceeds the 9 positions of a 3x3 block"),
        (["data.crop_size=48"], "data.crop_size: crop size 48 gives a 7x7 feature grid"),
        (["model.patch_size=1"], "model.patch_size is 1"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError) as error:
            patches.make_bank(_config(overrides, *extra), progress=False)
        assert message in _one_line(error)
    with pytest.raises(ConfigError, match="has no patches section"):
        patches.make_bank(load_train_config("tutorial"), progress=False)
    with pytest.raises(ConfigError) as error:   # a bank that cannot be filled stops with a reason
        patches.make_bank(_config(overrides, "patches.second_softmax=false", "patches.threshold=9",
                                  "patches.pure_iteration_share=0", "patches.max_iterations=2"), progress=False)
    assert re.match(r"patches.max_iterations: 2 sampling iterations kept \d+ of the 48 blocks", _one_line(error))


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(4, 3, dtype=torch.uint8), r"expected a tensor \[B, s, s\] of square blocks, got shape \[4, 3\]"),
    (torch.full((48, 3, 3), 99, dtype=torch.uint8), r"labels \[99\] outside the class range 0..15"),
    (torch.zeros(48, 2, 2, dtype=torch.uint8), "blocks of 2x2, but the patch size is 3"),
])
def test_a_damaged_bank_file_is_a_one_line_error_naming_it(overrides, bad, message):
    config = _config(overrides)
    path = patches.make_bank(config, progress=False).path
    torch.save(bad, path)
    with pytest.raises(DatasetError, match=message) as error:
        patches.make_bank(config, progress=False)
    assert _one_line(error).startswith(f"{path}: ") and "--force makes it again" in str(error.value)


def test_a_bank_that_does_not_match_its_statistics_is_refused_and_force_replaces_it(overrides, cli_error):
    config = _config(overrides)
    path = patches.make_bank(config, progress=False).path
    save_label_blocks(path, torch.zeros(5, 3, 3, dtype=torch.long), K)   # a whole bank, of another size
    with pytest.raises(DatasetError, match="5 label blocks, but .*json says 48"):
        patches.make_bank(config, progress=False)
    err = cli_error(["patches", "--config", "tutorial_pa3", "--no-progress", *[f"--set={o}" for o in overrides]])
    assert err.startswith(f"error: {path}: 5 label blocks")
    assert not patches.make_bank(config, force=True, progress=False).reused
    assert patches.make_bank(config, progress=False).reused


# ------------------------------------------------------------------------------ the figure
def test_the_figure_shows_blocks_in_the_class_palette(assert_fits_in_figure):
    blocks = torch.tensor([[[0, 0, 1], [0, 0, 1], [2, 2, 2]], [[3, 3, 3], [3, 3, 3], [3, 3, 3]]])
    mosaic = viz.label_block_mosaic(blocks, ncols=2, cell=2)
    assert mosaic.shape == (6, 6 + 1 + 6)
    assert mosaic[0, 4] == 1 and mosaic[5, 0] == 2 and (mosaic[:, 6] == 255).all() and (mosaic[:, 7:] == 3).all()
    names = ["red_striped", "green_wavy", "blue_dotted", "yellow_striped"]
    figure = viz.plot_label_blocks(blocks, names, num_seen=3, title="two blocks")
    assert len(figure.axes) == 1 and figure.axes[0].get_title().startswith("two blocks")
    assert figure.get_size_inches()[0] <= viz.MAX_FIGURE_WIDTH
    labels = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert labels == ["red_striped", "green_wavy", "blue_dotted", "yellow_striped*"]
    assert_fits_in_figure(figure)
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        viz.plot_label_blocks(torch.full((1, 3, 3), 7), names, num_seen=3)


# ------------------------------------------------------------------------------ the command line
def test_patches_help_explains_every_option():
    sub = build_parser()._subparsers._group_actions[0].choices["patches"]
    text = sub.format_help()
    for option in ("--config", "--set", "--force", "--out", "--no-progress", "data/label_blocks"):
        assert option in text
    assert all(action.help for action in sub._actions)


def test_the_command_line_makes_reuses_and_refuses(overrides, tmp_path, capsys, cli_error):
    sets = [f"--set={o}" for o in overrides]
    out = tmp_path / "generated_patch" / "tiny.pt"
    assert main(["patches", "--config", "tutorial_pa3", "--out", str(out), "--no-progress", *sets]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"bank: {out} (made in ") and lines[1].startswith("blocks: 48 of 3x3; ")
    assert [line.split(":")[0] for line in lines] == ["bank", "blocks", "pixelcnn", "sampling", "statistics"]
    assert main(["patches", "--config", "tutorial_pa3", "--out", str(out), "--no-progress", *sets]) == 0
    assert capsys.readouterr().out.startswith(f"bank: {out} (cached)")
    err = cli_error(["patches", "--config", "tutorial_pa3", "--out", str(out), "--no-progress", *sets,
                     "--set", "patches.seed=4"])
    assert err == f"error: {out}: exists; pass --force to replace it"
    first = torch.load(out, weights_only=True)
    assert main(["patches", "--config", "tutorial_pa3", "--out", str(out), "--no-progress", "--force", *sets,
                 "--set", "patches.seed=4"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["recipe"]["patches"]["seed"] == 4
    assert not torch.equal(torch.load(out, weights_only=True), first)    # another seed, another bank
    assert "a .pt or .npy file" in cli_error(["patches", "--config", "tutorial_pa3", "--out", str(tmp_path / "b.txt"),
                                              *sets])
    assert np.asarray(torch.load(out, weights_only=True)).dtype == np.uint8
