"""Tests of the embedded synthetic zero-shot segmentation benchmark."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cagnet.data import scenes, synthetic
from cagnet.data.embeddings import glove_vectors
from cagnet.data.pretraining import PretrainingSceneConfig
from cagnet.data.synthetic import (
    CLASS_ATTRIBUTES, CLASS_NAMES, COLOURS, PATTERNS, SEEN_IDS, UNSEEN_IDS, SyntheticConfig,
    build_synthetic_benchmark, class_embeddings, default_data_root, generate_sample,
    verify_synthetic_benchmark,
)
from cagnet.errors import ConfigError, DatasetError

SMALL = SyntheticConfig(seed=7, num_train=6, num_test=4, num_validation=3, image_size=48)


def file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- classes


def test_class_table_is_a_latin_square_split():
    assert len(CLASS_NAMES) == 16 and len(UNSEEN_IDS) == 4 and len(SEEN_IDS) == 12
    assert sorted(SEEN_IDS + UNSEEN_IDS) == list(range(16))
    seen_colours = {CLASS_ATTRIBUTES[i][0] for i in SEEN_IDS}
    seen_patterns = {CLASS_ATTRIBUTES[i][1] for i in SEEN_IDS}
    unseen_attrs = [CLASS_ATTRIBUTES[i] for i in UNSEEN_IDS]
    # every unseen class is a new combination of attributes the seen classes show separately
    for colour, pattern in unseen_attrs:
        assert colour in seen_colours and pattern in seen_patterns
    assert len({c for c, _ in unseen_attrs}) == 4 and len({p for _, p in unseen_attrs}) == 4
    for i, (colour, pattern) in enumerate(CLASS_ATTRIBUTES):
        assert CLASS_NAMES[i] == f"{colour}_{pattern}"
        assert synthetic.class_colour(i) == colour and synthetic.class_pattern(i) == pattern
    table = synthetic.attribute_table()
    assert [row["split"] for row in table].count("unseen") == 4
    assert {row["id"] for row in table if row["split"] == "unseen"} == set(UNSEEN_IDS)


def test_class_embeddings_concatenate_colour_and_pattern_glove_vectors():
    emb = class_embeddings()
    assert emb.shape == (16, 100) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    colours = glove_vectors(list(COLOURS))
    patterns = glove_vectors(list(PATTERNS))
    for i, (colour, pattern) in enumerate(CLASS_ATTRIBUTES):
        raw = np.concatenate([colours[list(COLOURS).index(colour)], patterns[PATTERNS.index(pattern)]])
        np.testing.assert_allclose(emb[i], raw / np.linalg.norm(raw), atol=1e-6)


# ----------------------------------------------------------------------------- scenes


def test_generate_sample_shapes_and_determinism():
    image, label = generate_sample(SMALL, "test", 3)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert label.shape == (48, 48) and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(16))
    again_image, again_label = generate_sample(SMALL, "test", 3)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(label, again_label)


def test_samples_depend_only_on_seed_split_and_index():
    bigger = SyntheticConfig(seed=7, num_train=50, num_test=40, image_size=48)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(generate_sample(SMALL, split, 2)[0], generate_sample(bigger, split, 2)[0])
    # the validation split is its own random stream, not a copy of the test images
    assert not np.array_equal(generate_sample(SMALL, "validation", 2)[0], generate_sample(SMALL, "test", 2)[0])
    other_seed = SyntheticConfig(seed=8, num_train=6, num_test=4, image_size=48)
    assert not np.array_equal(generate_sample(SMALL, "test", 2)[0], generate_sample(other_seed, "test", 2)[0])
    assert not np.array_equal(generate_sample(SMALL, "train", 2)[0], generate_sample(SMALL, "test", 2)[0])


@pytest.mark.parametrize("split", ["test", "validation"])
def test_scenes_mix_several_regions_and_test_scenes_have_seen_and_unseen(split):
    config = SyntheticConfig(seed=1, image_size=64)
    min_pixels = 0.03 * 64 * 64
    for index in range(40):
        _, label = generate_sample(config, split, index)
        counts = np.bincount(label.ravel(), minlength=16)
        assert (counts > 0).sum() >= 2
        assert counts[list(UNSEEN_IDS)].sum() >= min_pixels, index
        assert counts[list(SEEN_IDS)].sum() >= min_pixels, index
    train_classes = np.zeros(16, dtype=np.int64)
    for index in range(40):
        _, label = generate_sample(config, "train", index)
        train_classes += np.bincount(label.ravel(), minlength=16) > 0
    assert train_classes[list(UNSEEN_IDS)].sum() > 0  # training images may show unseen classes
    no_unseen = SyntheticConfig(seed=1, image_size=64, train_unseen_weight=0.0)
    for index in range(20):
        _, label = generate_sample(no_unseen, "train", index)
        assert not np.isin(label, UNSEEN_IDS).any()


def test_unseen_classes_have_a_reasonable_pixel_share_in_test():
    config = SyntheticConfig(seed=0, image_size=64)
    counts = np.zeros(16, dtype=np.int64)
    for index in range(60):
        counts += np.bincount(generate_sample(config, "test", index)[1].ravel(), minlength=16)
    unseen_share = counts[list(UNSEEN_IDS)].sum() / counts.sum()
    assert 0.2 <= unseen_share <= 0.6, unseen_share
    assert (counts[list(UNSEEN_IDS)] / counts.sum() > 0.03).all()


def colour_only_oracle_accuracy(images: np.ndarray, labels: np.ndarray, levels: int = 8) -> float:
    """Pixel accuracy of the best classifier that sees only a pixel's RGB value quantised to
    ``levels`` per channel: the majority label of each colour bin, fitted on the very pixels it
    is scored on (so an upper bound for any colour-only pixel classifier at that resolution)."""
    rgb = images.reshape(-1, 3).astype(np.int64) * levels // 256
    bins = (rgb[:, 0] * levels + rgb[:, 1]) * levels + rgb[:, 2]
    table = np.zeros((levels ** 3, 256), dtype=np.int64)
    np.add.at(table, (bins, labels.ravel().astype(np.int64)), 1)
    return float(table.max(axis=1).sum() / labels.size)


def test_pixels_are_not_separable_by_colour_alone():
    """A coloured pixel tells its colour but not its pattern, a grey one tells nothing: the
    colour-only oracle is far from the 100 % a pixel-separable dataset would give.

    If every coloured pixel were classified to the right colour with a 1/4 chance of the right
    pattern and every grey pixel to the most frequent class, the accuracy would be about
    0.5 * 0.25 + 0.5 * 0.1 = 0.18; the oracle gains a little more by memorising the tint of
    individual regions (measured with seed 0: 0.294 on these 60 images, 0.267 on the 150
    default test images; fewer pixels per bin let it memorise more). Bound asserted: < 0.35.
    """
    config = SyntheticConfig(seed=0)
    samples = [generate_sample(config, "test", i) for i in range(60)]
    images = np.stack([s[0] for s in samples])
    labels = np.stack([s[1] for s in samples])
    accuracy = colour_only_oracle_accuracy(images, labels)
    print(f"colour-only oracle pixel accuracy: {accuracy:.3f}")
    assert accuracy < 0.35
    # the oracle itself works: on a dataset painted in flat class colours it is perfect
    flat_colours = np.random.default_rng(0).integers(0, 256, (16, 3)).astype(np.uint8)
    assert colour_only_oracle_accuracy(flat_colours[labels], labels, levels=64) > 0.99


@pytest.mark.slow
def test_classes_are_distinguishable_with_spatial_context():
    """A small strided CNN trained briefly on training scenes (all 16 classes as targets)
    labels test pixels far better than the colour-only oracle fitted on the test pixels."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    torch.manual_seed(0)
    config = SyntheticConfig(seed=3, num_train=200, num_test=32, image_size=128)

    def tensors(split, count):
        samples = [generate_sample(config, split, i) for i in range(count)]
        images = np.stack([s[0] for s in samples])
        labels = np.stack([s[1] for s in samples])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return x, torch.from_numpy(labels).long(), images, labels

    train_x, train_y, _, _ = tensors("train", config.num_train)
    test_x, test_y, test_images, test_labels = tensors("test", config.num_test)

    def block(cin, cout, stride=1, dilation=1):
        return torch.nn.Sequential(
            torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
            torch.nn.BatchNorm2d(cout), torch.nn.ReLU())

    net = torch.nn.Sequential(block(3, 32, 2), block(32, 48, 2), block(48, 64), block(64, 64, 1, 2),
                              block(64, 64, 1, 4), torch.nn.Conv2d(64, 16, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(400):
        batch = torch.randint(0, len(train_x), (8,), generator=order)
        logits = F.interpolate(net(train_x[batch]), scale_factor=4, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        logits = F.interpolate(net(test_x), scale_factor=4, mode="bilinear", align_corners=False)
    context_accuracy = (logits.argmax(1) == test_y).float().mean().item()
    colour_accuracy = colour_only_oracle_accuracy(test_images, test_labels)
    print(f"context CNN {context_accuracy:.3f} vs colour-only oracle {colour_accuracy:.3f}")
    assert context_accuracy > 0.5
    assert context_accuracy > colour_accuracy + 0.2


# ----------------------------------------------------------------------------- files on disk


def test_build_writes_the_original_layout(tmp_path):
    root = build_synthetic_benchmark(tmp_path / "bench", SMALL, progress=False)
    assert root == (tmp_path / "bench").absolute()
    for split, folder, count in (("train", "train", 6), ("validation", "validation", 3), ("test", "val", 4)):
        for i in range(count):
            image = Image.open(root / "images" / folder / f"{split}_{i:05d}.png")
            label = Image.open(root / "annotations" / folder / f"{split}_{i:05d}.png")
            assert image.mode == "RGB" and label.mode == "L" and image.size == (48, 48)
            expected_image, expected_label = generate_sample(SMALL, split, i)
            np.testing.assert_array_equal(np.asarray(image), expected_image)
            np.testing.assert_array_equal(np.asarray(label), expected_label)
    lines = (root / "labels_refined.txt").read_text().splitlines()
    assert lines == [f"{i}\t{name}" for i, name in enumerate(CLASS_NAMES)]
    np.testing.assert_array_equal(np.load(root / "split" / "seen_cls.npy"), SEEN_IDS)
    np.testing.assert_array_equal(np.load(root / "split" / "novel_cls.npy"), UNSEEN_IDS)
    train_list = np.load(root / "split" / "train_list.npy")
    test_list = np.load(root / "split" / "test_list.npy")
    assert list(train_list) == [f"annotations/train/train_{i:05d}.png" for i in range(6)]
    assert list(test_list) == [f"annotations/val/test_{i:05d}.png" for i in range(4)]
    validation_list = np.load(root / "split" / "validation_list.npy")
    assert list(validation_list) == [f"annotations/validation/validation_{i:05d}.png" for i in range(3)]
    vectors = np.load(root / "word_vectors" / "glove.npy", allow_pickle=False)
    np.testing.assert_array_equal(vectors, class_embeddings())
    metadata = json.loads((root / "benchmark.json").read_text())
    assert metadata["complete"] is True and metadata["config"] == SMALL.to_dict()
    assert metadata["unseen"] == list(UNSEEN_IDS) and metadata["counts"] == {"train": 6, "validation": 3, "test": 4}
    assert sum(metadata["pixel_counts"]["test"]) == 4 * 48 * 48
    # benchmark.json is written last
    newest_other = max(p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "benchmark.json")
    assert (root / "benchmark.json").stat().st_mtime_ns >= newest_other
    assert verify_synthetic_benchmark(root)["content_sha256"] == metadata["content_sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]  # no temporary folders left


def test_regeneration_is_byte_identical_and_a_matching_benchmark_is_reused(tmp_path):
    first = build_synthetic_benchmark(tmp_path / "a", SMALL, progress=False)
    digests = file_digests(first)
    marker = (first / "benchmark.json").stat().st_mtime_ns
    assert build_synthetic_benchmark(first, SMALL, progress=False) == first
    assert (first / "benchmark.json").stat().st_mtime_ns == marker  # reused, not rewritten
    second = build_synthetic_benchmark(tmp_path / "b", SMALL, progress=False)
    assert file_digests(second) == digests
    build_synthetic_benchmark(first, SMALL, force=True, progress=False)
    assert file_digests(first) == digests
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_changed_config_or_damaged_folder_is_regenerated(tmp_path):
    root = build_synthetic_benchmark(tmp_path / "bench", SMALL, progress=False)
    other = SyntheticConfig(seed=8, num_train=3, num_test=2, num_validation=2, image_size=40)
    build_synthetic_benchmark(root, other, progress=False)
    assert json.loads((root / "benchmark.json").read_text())["config"] == other.to_dict()
    assert len(list((root / "images" / "train").iterdir())) == 3  # old files are gone
    (root / "annotations" / "val" / "test_00001.png").unlink()
    build_synthetic_benchmark(root, other, progress=False)
    assert (root / "annotations" / "val" / "test_00001.png").is_file()
    verify_synthetic_benchmark(root)
    (root / "images" / "val" / "test_00000.png").write_bytes(b"changed")
    with pytest.raises(DatasetError, match="differ"):
        verify_synthetic_benchmark(root)


def test_refuses_to_overwrite_a_folder_that_is_not_a_benchmark(tmp_path):
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        build_synthetic_benchmark(foreign, SMALL, progress=False)
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        build_synthetic_benchmark(a_file, SMALL, progress=False)


def test_failed_generation_leaves_no_partial_dataset(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "class_embeddings", broken)
    with pytest.raises(RuntimeError):
        build_synthetic_benchmark(tmp_path / "bench", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CAGNET_DATA", str(tmp_path / "elsewhere"))
    assert default_data_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("CAGNET_DATA")
    repo_root = Path(synthetic.__file__).resolve().parents[2]
    assert default_data_root() == repo_root / "data" / "synthetic"


@pytest.mark.parametrize("changes, key", [
    ({"image_size": 16}, "image_size"),
    ({"num_test": 0}, "num_test"),
    ({"background_regions": (3, 2)}, "background_regions"),
    ({"objects": 2}, "objects"),
    ({"train_unseen_weight": 1.5}, "train_unseen_weight"),
    ({"seed": -1}, "seed"),
    ({"num_train": 2.5}, "num_train"),
])
def test_bad_config_values_raise_config_error(changes, key):
    with pytest.raises(ConfigError, match=key):
        SyntheticConfig(**changes)


def test_config_round_trips_through_a_dict():
    config = SyntheticConfig(seed=3, objects=[0, 2])
    assert config.objects == (0, 2)
    assert SyntheticConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="colour"):
        SyntheticConfig.from_dict({"colour": 1})


def test_benchmark_loads_with_the_dataset_reader(tmp_path):
    datasets = pytest.importorskip("cagnet.data.datasets")
    root = build_synthetic_benchmark(tmp_path / "bench", SMALL, progress=False)
    info = datasets.load_dataset_info(root)
    assert info.class_names == list(CLASS_NAMES)
    assert list(info.seen) == list(SEEN_IDS) and list(info.unseen) == list(UNSEEN_IDS)
    assert datasets.image_ids(root, "train") == [f"train_{i:05d}" for i in range(6)]
    assert datasets.image_ids(root, "test") == [f"test_{i:05d}" for i in range(4)]
    train = datasets.SegmentationDataset(root, "train", info=info)
    for i in range(len(train)):
        label = train[i]["label"].numpy()
        raw = train.raw_sample(i)[1]
        assert not np.isin(label, np.arange(12, 255)).any()  # unseen pixels are ignored (255)
        np.testing.assert_array_equal(label == 255, np.isin(raw, UNSEEN_IDS))
    emb = info.class_embeddings("glove")
    np.testing.assert_allclose(emb, class_embeddings()[list(SEEN_IDS) + list(UNSEEN_IDS)], atol=1e-6)


def test_class_swatch_shows_the_class_colour_on_grey():
    for label_id in (0, 6, 13):
        swatch = synthetic.render_class_swatch(label_id, size=40, seed=1)
        assert swatch.shape == (40, 40, 3) and swatch.dtype == np.uint8
        np.testing.assert_array_equal(swatch, synthetic.render_class_swatch(label_id, size=40, seed=1))
        # the most saturated pixels have (about) the class colour, the least saturated are grey
        saturation = swatch.max(axis=2).astype(int) - swatch.min(axis=2)
        vivid = swatch[saturation >= np.percentile(saturation, 90)].mean(axis=0)
        nearest = min(COLOURS, key=lambda c: np.linalg.norm(vivid - np.asarray(COLOURS[c])))
        assert nearest == CLASS_ATTRIBUTES[label_id][0]
        assert np.percentile(saturation, 10) < 25
    with pytest.raises(ConfigError):
        synthetic.render_class_swatch(16)


def test_cli_data_builds_then_reuses(tmp_path, capsys):
    from cagnet.cli import main

    root = tmp_path / "bench"
    argv = ["data", "--root", str(root), "--num-train", "3", "--num-test", "2", "--image-size", "40", "--no-progress"]
    assert main(argv) == 0
    assert str(root) in capsys.readouterr().out
    stamp = (root / "benchmark.json").stat().st_mtime_ns
    assert main(argv) == 0  # same parameters: reused, not rewritten
    assert (root / "benchmark.json").stat().st_mtime_ns == stamp
    assert main(argv[:-3] + ["--image-size", "8", "--no-progress"]) == 2
    assert "image_size" in capsys.readouterr().err


@pytest.mark.parametrize("make, name", [(SyntheticConfig, "SyntheticConfig.objects"),
                                        (PretrainingSceneConfig, "pretraining.objects")])
def test_count_ranges_become_tuples_or_a_one_line_error(make, name):
    assert make(objects=[1, 3]).objects == (1, 3) == make(objects=(1, 3)).objects
    with pytest.raises(ConfigError, match=rf"^{name} must be a \(min, max\) pair, got \(1,\)$"):
        make(objects=(1,))


# ----------------------------------------------------------------------------- appearance: the scene factor
# Hashes of the plain benchmark, computed with the generator as it was before scene factors existed:
# the default appearance must keep every image bit for bit.
PLAIN_SMALL_CONTENT_SHA256 = "4690869b8d80de5ab3cba819f01961566fac24bb3d37b1ac2deb25f8339ca377"
PLAIN_SAMPLES_SHA256 = "2a2a1406ce46909b5e498d5df8404c2576833f14de5f0f297a08a7a39b31b281"
PLAIN_SWATCHES_SHA256 = "c2766e47f29fb0a89dc6cbcbb6521c13434faa8dc72dd02c970c62aebd97b80d"
SCENE = SyntheticConfig(seed=7, num_train=6, num_test=4, num_validation=3, image_size=48, appearance="scene")


def samples_digest(config: SyntheticConfig) -> str:
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        for index in range(3):
            image, label = generate_sample(config, split, index)
            digest.update(image.tobytes())
            digest.update(label.tobytes())
    return digest.hexdigest()


def test_the_plain_default_output_is_unchanged(tmp_path):
    assert SyntheticConfig().appearance == "plain"
    root = build_synthetic_benchmark(tmp_path / "bench", SMALL, progress=False)
    assert synthetic.benchmark_content_hash(root) == PLAIN_SMALL_CONTENT_SHA256
    assert not (root / synthetic.SCENE_FACTORS_FILE).exists()
    assert samples_digest(SyntheticConfig(seed=1, image_size=64)) == PLAIN_SAMPLES_SHA256
    swatches = hashlib.sha256()
    for label_id in range(16):
        swatches.update(synthetic.render_class_swatch(label_id, size=32, seed=3).tobytes())
    assert swatches.hexdigest() == PLAIN_SWATCHES_SHA256
    # the scene strengths do not touch plain images
    np.testing.assert_array_equal(generate_sample(SMALL, "test", 1)[0],
                                  generate_sample(dataclasses.replace(SMALL, illuminant_strength=0.3), "test", 1)[0])


def test_a_scene_image_is_the_plain_scene_under_a_light():
    plain = SyntheticConfig(seed=1, image_size=64)
    unlit = SyntheticConfig(seed=1, image_size=64, appearance="scene", illuminant_strength=0.0,
                            shading_strength=0.0, scale_range=(1.0, 1.0))
    assert samples_digest(unlit) == PLAIN_SAMPLES_SHA256        # strength 0 is the plain scene, bit for bit
    lit = SyntheticConfig(seed=1, image_size=64, appearance="scene")
    for split in ("train", "test"):
        plain_image, plain_label = generate_sample(plain, split, 2)
        image, label = generate_sample(lit, split, 2)
        np.testing.assert_array_equal(label, plain_label)           # same regions and classes
        assert np.abs(image.astype(int) - plain_image).mean() > 5   # seen under another light


def test_the_neutral_grey_reveals_the_light():
    """The grey around the patterns takes the illuminant's colour: log(R/B) of the grey pixels
    of a lit image minus that of the same pixels unlit is the light's log(R/B) gain (a warmer
    light, more mired, more red), whatever the classes."""
    plain = SyntheticConfig(seed=4, image_size=64)
    lit = SyntheticConfig(seed=4, image_size=64, appearance="scene", shading_strength=0.0, scale_range=(1, 1))
    measured, expected = [], []
    for index in range(8):
        plain_image = generate_sample(plain, "test", index)[0].astype(float)
        image = generate_sample(lit, "test", index)[0].astype(float)
        grey = (plain_image.max(2) - plain_image.min(2)) < 20          # the neutral part of every pattern
        lit_mean, plain_mean = image[grey].mean(0), plain_image[grey].mean(0)
        measured.append(np.log(lit_mean[0] / lit_mean[2]) - np.log(plain_mean[0] / plain_mean[2]))
        gains = synthetic.scene_factors(lit, "test", index).channel_gains()
        expected.append(np.log(gains[0] / gains[2]))
        assert np.sign(expected[-1]) == np.sign(synthetic.scene_factors(lit, "test", index).mired_shift)
    np.testing.assert_allclose(measured, expected, atol=0.03)
    assert np.ptp(expected) > 0.3


def test_scene_factor_maps_hold_the_applied_values():
    maps = synthetic.scene_factor_maps(SCENE, "test", 1)
    factors = synthetic.scene_factors(SCENE, "test", 1)
    assert maps.shape == (48, 48, 4) and maps.dtype == np.float32
    for column, value in ((0, factors.log_brightness), (1, factors.mired_shift), (3, factors.log_scale)):
        np.testing.assert_allclose(maps[..., column], value, rtol=1e-6)       # one light per scene
    shading = maps[..., 2]
    assert np.abs(shading).max() <= factors.shading_log_gain + 1e-6
    assert np.ptp(shading) > 1.5 * factors.shading_log_gain                # a ramp across the image
    # the values come from the image's own stream: the same for a plain benchmark (a placebo there)
    np.testing.assert_array_equal(maps, synthetic.scene_factor_maps(dataclasses.replace(SCENE, appearance="plain"),
                                                                    "test", 1))
    assert not np.array_equal(maps, synthetic.scene_factor_maps(SCENE, "test", 2))


def test_strengths_scale_one_draw_of_the_scene():
    weaker = dataclasses.replace(SCENE, illuminant_strength=0.5, shading_strength=0.15)
    weak = synthetic.scene_factors(weaker, "test", 0)
    strong = synthetic.scene_factors(SCENE, "test", 0)
    assert weak.log_brightness == pytest.approx(strong.log_brightness / 2)
    assert weak.mired_shift == pytest.approx(strong.mired_shift / 2)
    assert weak.shading_log_gain == pytest.approx(strong.shading_log_gain / 2)
    assert weak.shading_angle == strong.shading_angle
    default = SyntheticConfig(appearance="scene")
    values = [synthetic.scene_factors(default, "train", i) for i in range(200)]
    assert max(abs(v.mired_shift) for v in values) <= scenes.MIRED_RANGE
    assert 0.75 - 1e-9 <= min(v.scale for v in values) < 0.8 and 1.25 < max(v.scale for v in values) <= 1.33 + 1e-9


def test_warmer_light_raises_red_and_lowers_blue_as_wien_says():
    gains = scenes.illuminant_gains(0.0, 60.0)
    assert gains[0] > 1 and gains[1] == pytest.approx(1.0) and gains[2] < 1
    # blue moves (1/450 - 1/540) / (1/540 - 1/610) = 1.74 times as far as red, in log
    assert -np.log(gains[2]) / np.log(gains[0]) == pytest.approx(1.743, abs=0.01)
    assert scenes.illuminant_gains(0.4, 0.0) == pytest.approx(np.exp(0.4))


def test_classes_keep_their_colour_family_under_the_strongest_light():
    margin, _ = synthetic.colour_family_margin(scenes.SceneLighting())
    assert margin == pytest.approx(47.7, abs=0.1)                 # no light: red vs yellow
    default = SyntheticConfig(appearance="scene")
    margin, colour = synthetic.colour_family_margin(default.lighting)
    assert margin >= synthetic.MIN_FAMILY_MARGIN, colour
    # pixels: the most saturated pixels of each class region keep the class's colour family
    base_hues = {name: scenes.hue_of_rgb(rgb) for name, rgb in COLOURS.items()}
    for index in range(6):
        image, label = generate_sample(dataclasses.replace(default, image_size=64), "test", index)
        for label_id in np.unique(label):
            region = image[label == label_id].astype(float)
            vivid = region[(region.max(1) - region.min(1)) >= np.percentile(region.max(1) - region.min(1), 80)]
            hue = scenes.hue_of_rgb(vivid.mean(0))
            nearest = min(base_hues, key=lambda name: scenes.hue_distance(hue, base_hues[name]))
            assert nearest == CLASS_ATTRIBUTES[label_id][0], (index, CLASS_NAMES[label_id], hue)
    with pytest.raises(ConfigError, match=r"illuminant_strength=1.5 with shading_strength=1.0: under the strongest"):
        SyntheticConfig(appearance="scene", illuminant_strength=1.5, shading_strength=1.0)
    SyntheticConfig(illuminant_strength=1.5, shading_strength=1.0)   # plain: the strengths are not used


@pytest.mark.parametrize("changes, message", [
    ({"appearance": "foggy"}, "appearance must be one of plain, scene, got 'foggy'"),
    ({"illuminant_strength": -0.1}, r"illuminant_strength must be a number in \[0, 1.5\]"),
    ({"shading_strength": "strong"}, r"shading_strength must be a number"),
    ({"scale_range": (1.5, 1.0)}, r"scale_range must satisfy 0.5 <= low <= high <= 2.0, got \[1.5, 1.0\]"),
    ({"scale_range": 1.2}, r"SyntheticConfig.scale_range must be a \(low, high\) pair"),
])
def test_bad_appearance_values_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(**changes)


def test_a_scene_benchmark_records_its_factor_and_is_another_dataset(tmp_path):
    root = build_synthetic_benchmark(tmp_path / "bench", SCENE, progress=False)
    metadata = json.loads((root / "benchmark.json").read_text())
    assert metadata["config"]["appearance"] == "scene" and metadata["config"] == SCENE.to_dict()
    assert metadata["appearance"] == {"mode": "scene", "factors": list(scenes.SCENE_FACTOR_NAMES),
                                      "file": synthetic.SCENE_FACTORS_FILE}
    assert metadata["content_sha256"] != PLAIN_SMALL_CONTENT_SHA256
    recorded = synthetic.read_scene_factors(root)
    assert [len(recorded[s]) for s in ("train", "validation", "test")] == [6, 3, 4]
    assert recorded["test"][2] == synthetic.scene_factors(SCENE, "test", 2)   # exact: JSON floats round-trip
    np.testing.assert_array_equal(np.asarray(Image.open(root / "images" / "val" / "test_00002.png")),
                                  generate_sample(SCENE, "test", 2)[0])
    # another strength is another dataset: rebuilt in place, not reused
    stronger = dataclasses.replace(SCENE, illuminant_strength=0.5)
    build_synthetic_benchmark(root, stronger, progress=False)
    assert json.loads((root / "benchmark.json").read_text())["config"]["illuminant_strength"] == 0.5
    assert verify_synthetic_benchmark(root)["content_sha256"] != metadata["content_sha256"]
    # the plain benchmark has no factor file; a damaged one is a one-line error
    plain = build_synthetic_benchmark(tmp_path / "plain", SMALL, progress=False)
    with pytest.raises(DatasetError, match="scene_factors.json: not found"):
        synthetic.read_scene_factors(plain)
    (root / synthetic.SCENE_FACTORS_FILE).write_text('{"fields": ["x"]}')
    with pytest.raises(DatasetError, match="scene_factors.json: not a scene factor file"):
        synthetic.read_scene_factors(root)


def test_cli_data_builds_a_scene_benchmark(tmp_path, capsys):
    from cagnet.cli import main

    root = tmp_path / "bench"
    argv = ["data", "--root", str(root), "--num-train", "2", "--num-test", "2", "--num-validation", "1",
            "--image-size", "40", "--no-progress", "--appearance", "scene"]
    assert main(argv + ["--illuminant-strength", "0.5", "--scale-range", "0.8", "1.2"]) == 0
    config = json.loads((root / "benchmark.json").read_text())["config"]
    assert config["appearance"] == "scene" and config["illuminant_strength"] == 0.5
    assert config["scale_range"] == [0.8, 1.2] and config["shading_strength"] == SyntheticConfig().shading_strength
    capsys.readouterr()
    assert main(argv[:-2] + ["--shading-strength", "0.2"]) == 2
    assert capsys.readouterr().err.strip() == "error: --shading-strength: only used with --appearance scene"


def test_figure_of_one_class_under_scenes():
    from matplotlib.figure import Figure

    from cagnet import viz

    factors = [None] + [synthetic.scene_factors(SyntheticConfig(appearance="scene"), "test", i) for i in range(5)]
    swatches = [synthetic.render_class_swatch(5, size=32, seed=1, factors=f) for f in factors]
    np.testing.assert_array_equal(swatches[0], synthetic.render_class_swatch(5, size=32, seed=1))
    assert not np.array_equal(swatches[1], swatches[0])
    fig = viz.plot_class_under_scenes(swatches, factors, CLASS_NAMES[5])
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("plain") and f"{factors[1].mired_shift:+.0f} mired" in titles[1]
    assert "green_dotted" in fig.get_suptitle()
    with pytest.raises(ValueError, match="one scene factor"):
        viz.plot_class_under_scenes(swatches, factors[:2], CLASS_NAMES[5])
