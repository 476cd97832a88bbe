"""CaGNetv2's patch-wise parts at tiny sizes: label blocks (hole filling, cutting, tiling,
per-block noise), the patch-centre loss and accuracy, the label-block PixelCNN and its
checkpoint conversion; bad input is a one-line error naming what is wrong."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from cagnet.data.blocks import block_noise, check_label_blocks, cut_blocks, fill_block_holes, tile_blocks, tile_noise
from cagnet.errors import CheckpointError, ConfigError, DatasetError
from cagnet.losses import classification_loss
from cagnet.losses.segmentation import classification_accuracy, patch_centre_accuracy, patch_centre_loss, patch_centres
from cagnet.models import (LabelBlockPixelCNN, block_condition_classes, causal_mask, load_original_pixelcnn,
                           original_pixelcnn_to_project_key, project_pixelcnn_to_original_key,
                           to_original_pixelcnn_state_dict)

H = 255  # the ignore label: a hole


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- hole filling
def test_fill_takes_below_then_right_then_above_then_left():
    blocks = torch.tensor([
        [[H, 1, 2], [3, 4, 5], [6, 7, 8]],      # below (row +1 rolled up): 3
        [[0, 1, 2], [3, 4, 5], [H, H, 8]],      # (2,0): below cyclic = row 0 -> 0; (2,1) -> 1
        [[0, 1, 2], [3, H, 5], [6, H, 8]],      # (1,1): below is a hole; right -> 5; (2,1): below cyclic -> 1
        [[0, 1, H], [3, 4, H], [6, 7, H]],      # whole column: below are holes, right cyclic -> column 0
    ])
    filled, missing = fill_block_holes(blocks)
    assert filled.dtype == blocks.dtype and not missing.any()
    assert filled[0, 0, 0] == 3
    assert filled[1, 2].tolist() == [0, 1, 8]
    assert filled[2, 1, 1] == 5 and filled[2, 2, 1] == 1
    assert filled[3, :, 2].tolist() == [0, 3, 6]
    assert (blocks == H).sum() == 8          # the input is not modified


def test_fill_chains_through_a_filled_neighbour_and_reports_what_stays_open():
    # only (2,2) labelled: rows -1 fills (1,2); columns -1 then (1,1), (2,1) from it and (2,2);
    # rows +1 fills (0,1), (0,2) from row 2; columns +1 fills column 0 from column 2 (cyclic)
    block = torch.full((1, 3, 3), H)
    block[0, 2, 2] = 7
    filled, missing = fill_block_holes(block)
    assert (filled == 7).all() and not missing.any()
    # one pass reaches at most a few steps: in a 5x5 block with one label, far holes stay open
    block = torch.full((1, 5, 5), H)
    block[0, 0, 0] = 1
    filled, missing = fill_block_holes(block)
    assert missing.any() and (filled[missing] == H).all() and (filled[~missing] == 1).all()
    empty = torch.full((2, 3, 3), H)
    filled, missing = fill_block_holes(empty)
    assert missing.all() and (filled == H).all()
    # other ignore values
    filled, missing = fill_block_holes(torch.tensor([[[-1, 4], [4, 4]]]), ignore_index=-1)
    assert filled.tolist() == [[[4, 4], [4, 4]]] and not missing.any()


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(3, 3, dtype=torch.long), r"\[B, s, s\].*\[3, 3\]"),
    (torch.zeros(2, 3, 4, dtype=torch.long), r"\[2, 3, 4\]"),
    (torch.zeros(2, 3, 3), "dtype torch.float32"),
])
def test_fill_refuses_bad_blocks(bad, match):
    with pytest.raises(DatasetError, match=match) as error:
        fill_block_holes(bad)
    one_line(error)


# ---------------------------------------------------------------- cutting and tiling
def test_tiling_is_row_major_and_inverts_cutting():
    blocks = torch.arange(2 * 6 * 9).view(2, 6, 3, 3) % 11
    label_map = tile_blocks(blocks, (6, 9))
    assert label_map.shape == (2, 6, 9)
    for n in range(2):
        for k in range(6):
            r, c = divmod(k, 3)
            assert torch.equal(label_map[n, 3 * r:3 * r + 3, 3 * c:3 * c + 3], blocks[n, k])
    assert torch.equal(cut_blocks(label_map, 3), blocks.reshape(-1, 3, 3))


def test_cut_crops_and_drops_unlabelled_blocks():
    labels = torch.full((1, 7, 8), H)
    labels[0, 0, 0] = 2            # block (0, 0) has one labelled pixel
    labels[0, 6, :] = 1            # row 6 is cropped away (7 // 3 = 2 block rows)
    blocks = cut_blocks(labels, 3)
    assert blocks.shape == (1, 3, 3) and blocks[0, 0, 0] == 2
    assert cut_blocks(labels, 3, drop_unlabelled=False).shape == (4, 3, 3)
    with pytest.raises(ConfigError, match="2x8 are smaller than one block"):
        cut_blocks(labels[:, :2], 3)


def test_tiling_errors_name_the_sizes():
    blocks = torch.zeros(2, 4, 3, 3, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"grid 7x6 is not a multiple of the patch size 3") as error:
        tile_blocks(blocks, (7, 6))
    one_line(error)
    with pytest.raises(DatasetError, match=r"4 blocks per image, but a 9x6 grid holds 3x2 = 6 blocks") as error:
        tile_blocks(blocks, (9, 6))
    one_line(error)
    with pytest.raises(DatasetError, match=r"\[N, blocks, s, s\].*\[4, 3, 3\]") as error:
        tile_blocks(blocks[0], (6, 6))
    one_line(error)
    with pytest.raises(DatasetError, match=r"\[2, 4, 3, 2\]"):
        tile_blocks(blocks[..., :2], (6, 6))
    with pytest.raises(DatasetError, match="dtype torch.float32"):
        tile_blocks(blocks.float(), (6, 6))


def test_tiling_refuses_labels_outside_the_class_range():
    blocks = torch.zeros(1, 4, 3, 3, dtype=torch.long)
    blocks[0, 1, 1, 1] = 5
    blocks[0, 2, 0, 0] = -1
    assert tile_blocks(blocks.clamp(0, 4), (6, 6), num_classes=5).shape == (1, 6, 6)
    with pytest.raises(DatasetError, match=r"labels \[-1, 5\] outside the class range 0..4") as error:
        tile_blocks(blocks, (6, 6), num_classes=5)
    one_line(error)
    blocks[0, 2, 0, 0] = H
    with pytest.raises(DatasetError, match=r"\[255\]"):
        check_label_blocks(blocks[0], 6)
    assert check_label_blocks(blocks[0], 6, allow_ignore=True) == 3


def test_noise_is_one_vector_per_block():
    noise = torch.randn(2, 4, 2, 3)
    tiled = tile_noise(noise, 3)
    assert tiled.shape == (2, 4, 6, 9)
    for r in range(2):
        for c in range(3):
            patch = tiled[:, :, 3 * r:3 * r + 3, 3 * c:3 * c + 3]
            assert torch.equal(patch, noise[:, :, r:r + 1, c:c + 1].expand_as(patch))
    with pytest.raises(DatasetError, match=r"\[N, C, rows, columns\]"):
        tile_noise(noise[0], 3)


def test_block_noise_draws_what_the_original_draws_from_one_rng_state():
    # the original: randn(N, C, rows, 1, cols, 1).repeat(1, 1, 1, s, 1, s).view(N, C, h, w)
    original = (torch.randn(2, 5, 2, 1, 4, 1, generator=torch.Generator().manual_seed(4))
                .repeat(1, 1, 1, 3, 1, 3).view(2, 5, 6, 12))
    ours = block_noise(2, 5, (6, 12), 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(ours, original)
    with pytest.raises(ConfigError, match=r"grid 47x48 is not a multiple of the patch size 3") as error:
        block_noise(1, 2, (47, 48), 3)
    one_line(error)


# ---------------------------------------------------------------- patch-centre loss and accuracy
def test_patch_centres_are_the_middle_of_each_block():
    grid = torch.arange(36).view(1, 6, 6)
    assert patch_centres(grid, 3).tolist() == [[[7, 10], [25, 28]]]
    assert torch.equal(patch_centres(grid, 1), grid)
    with pytest.raises(ConfigError, match=r"grid 6x6 is not a multiple of the patch size 5") as error:
        patch_centres(grid, 5)
    one_line(error)
    with pytest.raises(ConfigError, match="positive odd"):
        patch_centres(grid, 2)


def test_patch_centre_loss_is_cross_entropy_at_the_centres_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 9, requires_grad=True)
    labels = torch.randint(0, 5, (2, 6, 9))
    labels[0, 1, 1] = H
    loss = patch_centre_loss(logits, labels, 3)
    expected = F.cross_entropy(logits[:, :, 1::3, 1::3], labels[:, 1::3, 1::3], ignore_index=H)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    centres = torch.zeros(6, 9, dtype=torch.bool)
    centres[1::3, 1::3] = True
    assert (logits.grad[..., ~centres] == 0).all() and (logits.grad[1][..., centres] != 0).any()
    # patch size 1 = the pixel-wise loss
    torch.testing.assert_close(patch_centre_loss(logits, labels, 1), classification_loss(logits, labels))


def test_patch_centre_accuracy_counts_labelled_centres():
    labels = torch.zeros(1, 3, 6, dtype=torch.long)
    labels[0, 1, 1], labels[0, 1, 4] = 2, 1
    logits = torch.zeros(1, 4, 3, 6)
    logits[0, 2, 1, 1] = 1.0      # right at centre (1, 1); centre (1, 4) predicts class 0
    logits[0, 3, 0, 0] = 1.0      # wrong off-centre
    assert float(patch_centre_accuracy(logits, labels, 3)) == 0.5
    assert float(classification_accuracy(logits, labels)) == pytest.approx(16 / 18)
    labels[0, 1, 4] = H           # ignored centre: not counted
    assert float(patch_centre_accuracy(logits, labels, 3)) == 1.0
    nothing = torch.full_like(labels, H)
    assert float(patch_centre_accuracy(logits, nothing, 3)) == 0.0
    assert float(patch_centre_loss(logits, nothing, 3)) == 0.0
    with pytest.raises(ValueError, match=r"\[N, K, H, W\] and \[N, H, W\]"):
        patch_centre_loss(logits, labels[0], 3)


# ---------------------------------------------------------------- PixelCNN
def tiny_pixelcnn(seed: int = 0, conditioned: bool = True, **kwargs) -> LabelBlockPixelCNN:
    """5 labels, 8-d embeddings, 6 channels, 3 layers. BN statistics of variance 0.01 amplify
    what each layer passes on, so that the input visibly matters at the output (at PyTorch's
    initial scale with BN's initial statistics, each layer shrinks the input's share)."""
    torch.manual_seed(seed)
    model = LabelBlockPixelCNN(5, embedding_dim=8, width=6, num_layers=3, kernel_size=7, conditioned=conditioned,
                               **kwargs)
    model.set_class_embeddings(torch.randn(5, 8))
    with torch.no_grad():
        for layer in model.layers:
            layer.norm.running_var.fill_(0.01)
    return model.eval()


def test_masks():
    a, b = causal_mask(3, "A"), causal_mask(3, "B")
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ConfigError, match="'A' or 'B'"):
        causal_mask(3, "C")


def test_pixelcnn_shapes_and_state_dict():
    model = tiny_pixelcnn()
    blocks = torch.randint(0, 5, (4, 3, 3))
    assert model(blocks).shape == (4, 5, 3, 3)
    assert model(blocks, torch.tensor([0, 1, 2, 3])).shape == (4, 5, 3, 3)
    assert model(blocks, blocks).shape == (4, 5, 3, 3)
    keys = list(model.state_dict())
    assert keys[0] == "class_embeddings" and "layers.0.condition_weight" in keys and keys[-2:] == ["output.weight",
                                                                                                   "output.bias"]
    assert not any(k.endswith(".mask") for k in keys)   # masks follow from the mask type
    assert [layer.conv.mask_type for layer in model.layers] == ["A", "B", "B"]
    assert "layers.0.condition_weight" not in tiny_pixelcnn(conditioned=False).state_dict()


def _raster_positions(side: int):
    return [(r, c) for r in range(side) for c in range(side)]


@pytest.mark.parametrize("condition", ["none", "block_class"])
def test_logits_depend_only_on_earlier_positions(condition):
    model = tiny_pixelcnn(1)
    blocks = torch.randint(0, 5, (3, 3, 3), generator=torch.Generator().manual_seed(2))
    given = None if condition == "none" else torch.tensor([1, 2, 3])
    with torch.no_grad():
        logits = model(blocks, given)
        for index, (row, col) in enumerate(_raster_positions(3)):
            changed = blocks.clone()
            changed[:, row, col] = (changed[:, row, col] + 1) % 5
            other = model(changed, given)
            difference = (other - logits).abs().amax(dim=(0, 1)).flatten()
            assert difference[:index + 1].max() < 1e-5, (row, col)    # itself and before: unchanged
            if index < 8:
                assert difference[index + 1:].max() > 1e-3, (row, col)  # some later position sees it


def test_the_original_training_condition_reveals_each_positions_label():
    # condition = the block's own labels (the original's training form): position 0 then
    # depends on its own label, which the masks were meant to hide
    model = tiny_pixelcnn(1)
    blocks = torch.randint(0, 5, (3, 3, 3), generator=torch.Generator().manual_seed(2))
    changed = blocks.clone()
    changed[:, 0, 0] = (changed[:, 0, 0] + 1) % 5
    with torch.no_grad():
        assert (model(changed, changed)[..., 0, 0] - model(blocks, blocks)[..., 0, 0]).abs().max() > 1e-3


def test_condition_weights_are_initialised():
    model = tiny_pixelcnn(3)
    for layer in model.layers:
        weight = layer.condition_weight
        assert torch.isfinite(weight).all() and weight.abs().max() <= 8 ** -0.5 and weight.std() > 0.05
    zero = tiny_pixelcnn(3, condition_init="zeros")
    blocks = torch.randint(0, 5, (2, 3, 3))
    with torch.no_grad():   # zero projections: the conditioned form starts as the unconditioned one
        torch.testing.assert_close(zero(blocks, torch.tensor([1, 4])), zero(blocks))
    with pytest.raises(ConfigError, match="condition_init must be one of linear, zeros"):
        LabelBlockPixelCNN(5, 8, condition_init="random")


def test_dropout_only_in_the_conditioned_form():
    model = tiny_pixelcnn(4).train()
    blocks = torch.randint(0, 5, (6, 3, 3))
    torch.manual_seed(0)
    assert torch.equal(model(blocks), model(blocks))
    a, b = model(blocks, torch.zeros(6, dtype=torch.long)), model(blocks, torch.zeros(6, dtype=torch.long))
    assert not torch.equal(a, b)


def test_pixelcnn_refuses_bad_input():
    model = tiny_pixelcnn()
    cases = [
        (lambda: model(torch.zeros(2, 3, dtype=torch.long)), DatasetError, r"\[B, s, s\].*\[2, 3\]"),
        (lambda: model(torch.full((2, 3, 3), 5)), DatasetError, r"labels \[5\] outside the class range 0..4"),
        (lambda: model(torch.full((2, 3, 3), H)), DatasetError, r"\[255\]"),
        (lambda: model(torch.zeros(2, 3, 3)), DatasetError, "dtype"),
        (lambda: model(torch.zeros(2, 3, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long)), DatasetError,
         r"expected classes \[2\].*or \[2, 3, 3\].*got shape \[3\]"),
        (lambda: model(torch.zeros(2, 3, 3, dtype=torch.long), torch.tensor([0, 7])), DatasetError,
         r"condition classes: labels \[7\]"),
        (lambda: tiny_pixelcnn(conditioned=False)(torch.zeros(1, 3, 3, dtype=torch.long), torch.tensor([0])),
         ConfigError, "no condition projections"),
        (lambda: model.set_class_embeddings(torch.zeros(4, 8)), ConfigError, r"\(4, 8\) does not match"),
    ]
    for run, kind, match in cases:
        with pytest.raises(kind, match=match) as error:
            run()
        one_line(error)


def test_block_condition_class_is_the_most_frequent_labelled_class():
    blocks = torch.tensor([
        [[1, 1, 2], [2, 2, 1], [H, H, H]],     # tie 1 / 2 (3 each): the smaller, 1
        [[4, H, H], [H, H, H], [H, H, 3]],     # tie: 3
        [[0, 0, 4], [4, 4, H], [H, H, H]],     # 4
    ])
    assert block_condition_classes(blocks, 5).tolist() == [1, 3, 4]
    blocks[1] = H
    with pytest.raises(DatasetError, match="no labelled pixel") as error:
        block_condition_classes(blocks, 5)
    one_line(error)
    with pytest.raises(DatasetError, match=r"labels \[6\]"):
        block_condition_classes(torch.full((1, 3, 3), 6), 5)


# ---------------------------------------------------------------- PixelCNN checkpoints
def test_original_pixelcnn_keys():
    assert original_pixelcnn_to_project_key("conv3.1.running_var") == "layers.2.norm.running_var"
    assert original_pixelcnn_to_project_key("conv1.0.weight") == "layers.0.conv.weight"
    assert original_pixelcnn_to_project_key("conv9.bias") == "output.bias"
    assert original_pixelcnn_to_project_key("b8") == "layers.7.condition_weight"
    assert original_pixelcnn_to_project_key("conv9.bias", num_layers=3) is None
    assert original_pixelcnn_to_project_key("conv1.0.mask") is None
    for key in ("layers.2.norm.running_var", "layers.0.conv.weight", "output.bias", "layers.7.condition_weight"):
        assert original_pixelcnn_to_project_key(project_pixelcnn_to_original_key(key)) == key
    with pytest.raises(KeyError):
        project_pixelcnn_to_original_key("class_embeddings")


def test_pixelcnn_round_trip_through_an_original_file(tmp_path):
    source = tiny_pixelcnn(5)
    with torch.no_grad():
        for layer in source.layers:
            layer.norm.running_mean.uniform_(-0.5, 0.5)
            layer.norm.running_var.uniform_(0.5, 1.5)
    original = to_original_pixelcnn_state_dict(source)
    assert "class_embeddings" not in original and original["conv1.0.mask"].shape == original["conv1.0.weight"].shape
    assert (original["conv1.0.weight"][..., 3, 3] == 0).all()              # stored masked, as after a forward
    path = tmp_path / "voc12_006.pth"
    torch.save({"epoch": 6, "state_dict": OrderedDict(("module." + k, v) for k, v in original.items())}, path)
    target = tiny_pixelcnn(6)
    report = load_original_pixelcnn(target, path)
    assert report.layout == "original" and report.left_initialised == ["class_embeddings"]
    target.set_class_embeddings(source.class_embeddings)
    blocks = torch.randint(0, 5, (4, 3, 3))
    with torch.no_grad():
        for condition in (None, torch.tensor([0, 1, 2, 3]), blocks):
            torch.testing.assert_close(target(blocks, condition), source(blocks, condition), rtol=0, atol=1e-6)
    # the project's own layout
    again = tiny_pixelcnn(7)
    assert load_original_pixelcnn(again, source.state_dict()).layout == "project"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), source.state_dict().values()))


def test_pixelcnn_checkpoint_mismatches_are_one_line_and_change_nothing():
    state = to_original_pixelcnn_state_dict(tiny_pixelcnn(5))
    bad_mask = OrderedDict(state)
    bad_mask["conv2.0.mask"] = torch.ones_like(state["conv2.0.mask"])
    cases = [
        (tiny_pixelcnn(6, conditioned=False), state, r"unexpected keys: b1, b2, b3"),
        (tiny_pixelcnn(6), OrderedDict((k, v) for k, v in state.items() if k != "b2"), r"missing keys: b2"),
        (tiny_pixelcnn(6), bad_mask, r"conv2.0.mask is not the model's mask B"),
        (LabelBlockPixelCNN(4, 8, 6, 3).eval(), state, r"conv4.weight file \[5, 6, 1, 1\] vs model \[4, 6, 1, 1\]"),
    ]
    for model, source, match in cases:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(CheckpointError, match=match) as error:
            load_original_pixelcnn(model, source, name="blocks.pth")
        assert "blocks.pth" in one_line(error)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
