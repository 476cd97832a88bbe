"""cagnet.predict and ``python -m cagnet predict``: label maps, overlays and class shares of any image."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from cagnet.cli import build_parser, main
from cagnet.config import load_train_config
from cagnet.data import load_dataset_info, resize_labels
from cagnet.data.embed import embed_class_names
from cagnet.data.transforms import TestTransform
from cagnet.errors import CagnetError
from cagnet.evaluate import predict_labels, predict_logits
from cagnet.models import build_cagnet
from cagnet.predict import (PngStream, Predictor, class_argmax, collect_inputs, iter_upsampled_argmax,
                            iter_upsampled_logits, palette_png, predict_files, upsampled_argmax, warp_image)
from cagnet.viz import class_palette, overlay_mask
from cagnet.viz.masks import colorize_mask, hatch

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def predictor(custom_dataset, custom_overrides) -> Predictor:
    """The tutorial config's model, random weights, for the custom dataset (3 seen, 2 unseen
    classes, 50-d GloVe vectors); images warped to 64 px."""
    embed_class_names(custom_dataset)
    config = load_train_config("tutorial", custom_overrides + ["data.test_size=64"])
    info = load_dataset_info(custom_dataset)
    torch.manual_seed(0)
    model = build_cagnet(config.model, class_embeddings=info.class_embeddings("glove"),
                         num_seen=info.num_seen, num_unseen=info.num_unseen).eval()
    return Predictor.from_config(config, model, info)


# ---------------------------------------------------------------- upsampling
@pytest.mark.parametrize("size", [(97, 143), (200, 120), (5, 7), (16, 16)])
def test_banded_upsampling_equals_interpolate_then_argmax(size):
    logits = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(1))
    reference = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]
    top2 = reference.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-4        # pixels where float rounding cannot flip the argmax
    assert decided.float().mean() > 0.99
    for max_bytes in (1, 4096, 2 ** 30):          # one row per band, several bands, one band
        labels = upsampled_argmax(logits, size, max_bytes=max_bytes)
        assert labels.shape == size
        assert torch.equal(labels[decided], reference.argmax(0)[decided])


# ---------------------------------------------------------------- Predictor
def test_full_and_original_protocols_match_the_evaluation(predictor):
    image = _random_image(97, 143)
    inputs = TestTransform(size=64).transform_image(image)[None]
    logits = predict_logits(predictor.model, inputs)
    full = predictor.label_map(image, "full")
    reference = predict_labels(logits, 5, (97, 143))[0]
    assert full.shape == (97, 143) and full.dtype == np.int64
    assert (full == reference.numpy()).mean() > 0.999
    original = predictor.label_map(image, "original")
    grid = predict_labels(logits, 5)[0]
    np.testing.assert_array_equal(original, resize_labels(grid, (97, 143)).numpy())


def test_seen_penalty_moves_pixels_to_unseen_classes(predictor):
    image = _random_image(40, 50)
    assert predictor.label_map(image, seen_penalty=1e6).min() >= predictor.info.num_seen
    assert predictor.label_map(image, seen_penalty=-1e6).max() < predictor.info.num_seen


def test_prediction_label_ids_shares_and_overlay(predictor):
    prediction = predictor.predict(_random_image(30, 41))
    info = predictor.info
    assert prediction.class_names == info.eval_class_names == ["sky", "grass", "road", "potted plant", "water"]
    ids = prediction.label_ids()
    assert ids.dtype == np.uint8 and ids.shape == (30, 41)
    np.testing.assert_array_equal(ids, info.eval_ids[prediction.labels])
    shares = prediction.class_shares()
    assert [c["name"] for c in shares] == info.eval_class_names
    assert [c["unseen"] for c in shares] == [False, False, False, True, True]
    assert [c["id"] for c in shares] == [0, 1, 3, 2, 4]
    assert sum(c["share"] for c in shares) == pytest.approx(1.0, abs=1e-5)
    assert isinstance(prediction.overlay(), Figure)
    # the palette PNG holds the label ids and the class colours of the figures
    png = Image.open(io.BytesIO(palette_png(prediction)))
    assert png.mode == "P" and png.size == (41, 30)
    np.testing.assert_array_equal(np.asarray(png), ids)
    palette = np.asarray(png.getpalette()[:768], dtype=np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(palette[info.eval_ids], class_palette(info.eval_class_names))


def test_image_formats_and_exif_orientation(predictor, tmp_path):
    rgb = _random_image(20, 30)
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.bmp")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "sixteen.tif")
    exif = Image.Exif()
    exif[0x0112] = 6   # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif)
    assert predictor.predict_file(tmp_path / "a.png").labels.shape == (20, 30)
    sixteen = predictor.predict_file(tmp_path / "sixteen.tif")
    np.testing.assert_array_equal(sixteen.image[..., 1], rgb[..., 0])   # 16 bits scaled, not clipped
    assert predictor.predict_file(tmp_path / "gray.bmp").image.shape == (20, 30, 3)
    assert predictor.predict_file(tmp_path / "rotated.jpg").labels.shape == (30, 20)


# ---------------------------------------------------------------- files
def _inputs(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_random_image(97, 143, 1)).save(folder / "one.png")
    Image.fromarray(_random_image(200, 120, 2)).save(folder / "sub" / "two.jpg")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".hidden").write_text("skipped\n")
    (folder / "truncated.png").write_bytes((folder / "one.png").read_bytes()[:300])
    return folder


def test_predict_files_writes_outputs_and_reports_bad_files(predictor, tmp_path):
    inputs = _inputs(tmp_path / "in")
    before = _digest(inputs)
    out = tmp_path / "out"
    reported = []
    run = predict_files(predictor, [inputs], out, progress=False, report=reported.append)
    assert _digest(inputs) == before                                     # inputs never modified
    assert len(run.errors) == 2 and reported == run.errors
    assert any("notes.txt" in e for e in run.errors) and any("truncated.png" in e for e in run.errors)
    assert all("\n" not in e for e in run.errors)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "one_labels.png", "one_overlay.png", "predictions.jsonl", "sub/two_labels.png", "sub/two_overlay.png"]
    assert Image.open(out / "one_labels.png").size == (143, 97)
    assert Image.open(out / "sub" / "two_labels.png").size == (120, 200)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["one.png", "two.jpg"]
    assert records[0]["width"] == 143 and records[0]["height"] == 97 and records[0]["protocol"] == "full"
    assert sum(c["share"] for c in records[1]["classes"]) == pytest.approx(1.0, abs=1e-5)

    # nothing is replaced without force, and nothing is written when refused
    written = _digest(out)
    with pytest.raises(CagnetError, match="one_labels.png: exists; pass --force"):
        predict_files(predictor, [inputs], out, progress=False)
    assert _digest(out) == written
    again = predict_files(predictor, [inputs / "one.png"], out, force=True, progress=False)
    assert len(again.records) == 1 and not again.errors


def test_output_names_that_clash_or_hit_an_input_are_refused(predictor, tmp_path):
    inputs = _inputs(tmp_path / "in")
    Image.fromarray(_random_image(10, 10)).save(inputs / "one.jpg")
    with pytest.raises(CagnetError, match="one.jpg and .*one.png would both write"):
        predict_files(predictor, [inputs / "one.jpg", inputs / "one.png"], tmp_path / "out", progress=False)
    Image.fromarray(_random_image(10, 10)).save(inputs / "x.png")
    Image.fromarray(_random_image(10, 10)).save(inputs / "x_labels.png")
    before = _digest(inputs)
    with pytest.raises(CagnetError, match="x_labels.png: is an input image"):
        predict_files(predictor, [inputs / "x.png", inputs / "x_labels.png"], inputs, progress=False)
    assert not (tmp_path / "out").exists() and _digest(inputs) == before
    twice = predict_files(predictor, [inputs / "one.png", inputs / "one.png"], tmp_path / "out", progress=False)
    assert len(twice.records) == 1


def test_an_output_folder_inside_the_input_folder_is_not_read_back(predictor, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(_random_image(12, 18)).save(inputs / "a.png")
    predict_files(predictor, [inputs], inputs / "out", progress=False)
    run = predict_files(predictor, [inputs], inputs / "out", force=True, progress=False)
    assert [Path(r["image"]).name for r in run.records] == ["a.png"] and not run.errors


# ---------------------------------------------------------------- command line
@pytest.fixture()
def custom_checkpoint(predictor, tmp_path) -> Path:
    path = tmp_path / "model.pt"
    torch.save(predictor.model.state_dict(), path)
    return path


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)] + ["--set", "data.test_size=64"]


def test_cli_predict_exit_status_and_one_line_errors(custom_overrides, custom_checkpoint, tmp_path, capsys):
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    args = ["predict", "--config", "tutorial", "--checkpoint", str(custom_checkpoint), *_sets(custom_overrides),
            "--no-progress"]
    assert main([*args, str(inputs / "one.png"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "one.png: " in captured.out and "1 image(s) labelled" in captured.out and not captured.err
    assert main([*args, str(inputs), str(tmp_path / "absent.jpg"), "--out", str(tmp_path / "out2"),
                 "--protocol", "original", "--seen-penalty", "2.5"]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert any("absent.jpg: no such file or folder" in e for e in errors)
    assert "2 image(s) labelled" in captured.out and "3 input(s) failed" in captured.out
    record = json.loads((tmp_path / "out2" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["protocol"] == "original" and record["seen_penalty"] == 2.5


def test_cli_predict_refusals_are_one_line(custom_overrides, custom_checkpoint, tmp_path, cli_error):
    inputs = _inputs(tmp_path / "in")
    args = ["predict", "--config", "tutorial", *_sets(custom_overrides), "--no-progress"]
    err = cli_error([*args, "--checkpoint", str(tmp_path / "none.pt"), str(inputs), "--out", str(tmp_path / "o")])
    assert "none.pt" in err and "file not found" in err
    main([*args, "--checkpoint", str(custom_checkpoint), str(inputs / "one.png"), "--out", str(tmp_path / "o")])
    err = cli_error([*args, "--checkpoint", str(custom_checkpoint), str(inputs / "one.png"), "--out", str(tmp_path / "o")])
    assert "one_labels.png: exists; pass --force" in err
    err = cli_error([*args, "--checkpoint", str(custom_checkpoint), str(inputs), "--out", str(tmp_path / "o2"),
                     "--seen-penalty", "nan"])
    assert "seen penalty must be a finite number" in err and not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- bounded memory (issue 17)
@pytest.mark.parametrize("size, band", [((97, 143), 10), ((200, 120), 7), ((61, 300), 1)])
@pytest.mark.parametrize("num_classes", [5, 6])
def test_banded_upsampling_is_the_whole_image_interpolate_bit_for_bit(size, band, num_classes):
    # bands of columns (143 % 10, 120 % 7 != 0: a narrower last band); each band's values are
    # those of the whole-image F.interpolate bit for bit, so the labels are equal everywhere
    logits = torch.randn(1, num_classes, 16, 16, generator=torch.Generator().manual_seed(2))
    upsampled = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]
    for columns, values in iter_upsampled_logits(logits, size, band=band):
        assert torch.equal(values, upsampled[:, :, columns])
    reference = upsampled.argmax(0)
    assert torch.equal(upsampled_argmax(logits, size, band=band), reference)
    bands = list(iter_upsampled_argmax(logits, size, band=band))
    assert [c.start for c, _ in bands] == list(range(0, size[1], band)) and bands[-1][0].stop == size[1]
    assert all(values.shape == (size[0], c.stop - c.start) for c, values in bands)
    # a byte budget below one band's logits gives bands of that many columns, same labels
    budget = 4 * 6 * size[0] * 3
    assert [c.stop - c.start for c, _ in iter_upsampled_argmax(logits, size, max_bytes=budget)][0] == 3
    assert torch.equal(upsampled_argmax(logits, size, max_bytes=budget), reference)


@pytest.mark.parametrize("protocol", ["full", "original"])
def test_label_bands_cover_the_image_once_and_give_the_label_map(predictor, protocol):
    image = _random_image(53, 71, 3)
    whole = predictor.label_map(image, protocol)
    labels = np.full(whole.shape, 255, dtype=np.uint8)
    blocks = list(predictor.label_bands(image, protocol, max_bytes=4 * 5 * 53 * 4))   # several blocks
    assert len(blocks) > 3
    for rows, columns, block in blocks:
        assert block.dtype == np.uint8
        assert (labels[rows, columns] == 255).all()    # each pixel once
        labels[rows, columns] = block
    np.testing.assert_array_equal(labels, whole)


@pytest.mark.parametrize("normalization, size", [("caffe", 64), ("imagenet", (37, 53))])
def test_warp_of_a_large_image_reads_rows_and_matches_the_whole_image_warp(normalization, size):
    image = _random_image(301, 257, 4)
    transform = TestTransform(size=size, normalization=normalization)
    reference = transform.transform_image(image)
    assert torch.equal(warp_image(image, transform), reference)       # small: the evaluation's own call
    for source in (image, Image.fromarray(image)):
        banded = warp_image(source, transform, whole_pixels=1)       # as for a photo above WHOLE_WARP_PIXELS
        assert banded.shape == reference.shape and banded.dtype == torch.float32
        scale = float(reference.abs().max())
        assert float((banded - reference).abs().max()) < 1e-6 * scale   # float32 rounding of the sums only


def test_predict_files_streams_outputs_without_a_matplotlib_figure(predictor, tmp_path, monkeypatch):
    import cagnet.viz

    def no_figure(*args, **kwargs):
        raise AssertionError("predict_files must not draw a full-size figure")

    monkeypatch.setattr(cagnet.viz, "overlay_with_legend", no_figure)
    image = _random_image(97, 143, 5)
    Image.fromarray(image).save(tmp_path / "a.png")
    run = predict_files(predictor, [tmp_path / "a.png"], tmp_path / "out", progress=False, seen_penalty=1.0)
    labels = predictor.label_map(image, seen_penalty=1.0)             # evaluation indices
    info = predictor.info
    assert 0 < (labels >= info.num_seen).mean() < 1                   # seen pixels and hatched unseen ones
    png = Image.open(tmp_path / "out" / "a_labels.png")
    assert png.mode == "P" and png.size == (143, 97)
    np.testing.assert_array_equal(np.asarray(png), info.eval_ids[labels])
    palette = np.asarray(png.getpalette()[:768], dtype=np.uint8).reshape(256, 3)
    colours = class_palette(info.eval_class_names)
    np.testing.assert_array_equal(palette[info.eval_ids], colours)
    # shares counted from the map; the overlay: title, the blended image at full size, legend
    counts = np.bincount(labels.ravel(), minlength=5)
    assert [c["share"] for c in run.records[0]["classes"]] == [round(c / labels.size, 6) for c in counts]
    overlay = np.asarray(Image.open(tmp_path / "out" / "a_overlay.png").convert("RGB"))
    height, width = overlay.shape[:2]
    assert height > 97 + 20 and width >= 143
    left = (width - 143) // 2
    expected = hatch(overlay_mask(image, labels, colours, 0.5), labels >= info.num_seen,
                     base=colorize_mask(labels, colours))                # as viz.overlay_with_legend
    matches = [top for top in range(height - 97 + 1)
               if np.array_equal(overlay[top:top + 97, left:left + 143], expected)]
    assert len(matches) == 1 and matches[0] > 0                       # the title strip is above it
    strips = np.concatenate([overlay[:matches[0]], overlay[matches[0] + 97:]]).reshape(-1, 3)
    shown = {tuple(c) for c in np.unique(strips, axis=0)}
    for k in range(5):                                                 # legend: the present classes only
        assert (tuple(colours[k]) in shown) == bool(counts[k]), info.eval_class_names[k]


def test_png_stream_round_trips_rgb_and_palette_rows():
    rgb = _random_image(40, 33, 6)
    rgb[20:] //= 64                      # flat rows, for the filters other than None
    buffer = io.BytesIO()
    png = PngStream(buffer, 33, 40)
    for top in range(0, 40, 7):
        png.add_rows(rgb[top:top + 7])
    png.close()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))), rgb)
    labels = np.random.default_rng(7).integers(0, 5, (9, 300), dtype=np.uint8)
    palette = np.random.default_rng(8).integers(0, 256, (256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    png = PngStream(buffer, 300, 9, palette=palette)
    png.add_rows(labels)
    with pytest.raises(ValueError, match="more than the 9 rows"):
        png.add_rows(labels[:1])
    png.close()
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    assert decoded.mode == "P"
    np.testing.assert_array_equal(np.asarray(decoded), labels)
    with pytest.raises(ValueError, match="5 of the 6 rows"):
        short = PngStream(io.BytesIO(), 2, 6)
        short.add_rows(np.zeros((5, 2, 3), np.uint8))
        short.close()


# ---------------------------------------------------------------- pixel limit
def _two_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    Image.fromarray(_random_image(97, 143, 1)).save(folder / "a.png")      # 13871 pixels
    Image.fromarray(_random_image(200, 120, 2)).save(folder / "b.png")     # 24000 pixels
    return folder


def test_images_above_the_pixel_limit_are_refused_in_one_line(predictor, tmp_path, monkeypatch):
    from PIL import Image as PILImage

    inputs = _two_images(tmp_path / "in")
    run = predict_files(predictor, [inputs], tmp_path / "out", progress=False, max_pixels=15000)
    assert [Path(r["image"]).name for r in run.records] == ["a.png"]
    assert run.errors == [f"{inputs / 'b.png'}: 120 x 200 = 24000 pixels, above the limit of 15000 (--max-pixels)"]
    assert not (tmp_path / "out" / "b_labels.png").exists()
    # PIL's own limit neither warns nor refuses: ours replaces it, and it is left as it was
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 5000)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = predict_files(predictor, [inputs], tmp_path / "out2", progress=False, max_pixels=None)
    assert len(again.records) == 2 and not again.errors
    assert PILImage.MAX_IMAGE_PIXELS == 5000
    with pytest.raises(CagnetError, match="max pixels must be a positive whole number"):
        predict_files(predictor, [inputs], tmp_path / "out3", progress=False, max_pixels=0)


def test_cli_predict_max_pixels(custom_overrides, custom_checkpoint, tmp_path, capsys, cli_error):
    inputs = _two_images(tmp_path / "in")
    args = ["predict", "--config", "tutorial", "--checkpoint", str(custom_checkpoint), *_sets(custom_overrides),
            "--no-progress", str(inputs)]
    assert main([*args, "--out", str(tmp_path / "out"), "--max-pixels", "1.5e4"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"error: {inputs / 'b.png'}: 120 x 200 = 24000 pixels, above the limit of 15000 (--max-pixels)"]
    err = cli_error([*args, "--out", str(tmp_path / "out2"), "--max-pixels", "0"])
    assert "--max-pixels must be a positive whole number of pixels, got 0" in err
    assert "10000 x 10000" in build_parser()._subparsers._group_actions[0].choices["predict"].format_help()


# ---------------------------------------------------------------- file names of any bytes
needs_bytes_names = pytest.mark.skipif(sys.platform in ("win32", "darwin"),
                                       reason="file names that are not UTF-8 need a POSIX file system of bytes")


@needs_bytes_names
def test_file_names_that_are_not_utf8(predictor, custom_overrides, custom_checkpoint, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    raw = os.path.join(os.fsencode(inputs), b"caf\xe9.png")            # Latin-1 bytes: not UTF-8
    Image.fromarray(_random_image(30, 40, 1)).save(raw)
    Image.fromarray(_random_image(30, 40, 2)).save(inputs / "thé.png")  # UTF-8: kept as it is
    out = tmp_path / "out"
    run = predict_files(predictor, [inputs], out, progress=False)
    assert not run.errors and len(run.records) == 2
    odd, plain = sorted(run.records, key=lambda r: "image_hex" not in r)
    assert odd["image"] == f"{inputs}/caf\\xe9.png" and bytes.fromhex(odd["image_hex"]) == raw
    assert odd["labels"] == f"{out}/caf\\xe9_labels.png"
    assert plain["image"] == f"{inputs}/thé.png" and "image_hex" not in plain
    json.dumps(run.records, ensure_ascii=False).encode("utf-8")        # no lone surrogates anywhere
    assert sorted(os.listdir(os.fsencode(out))) == sorted(
        [b"caf\\xe9_labels.png", b"caf\\xe9_overlay.png", "thé_labels.png".encode(), "thé_overlay.png".encode(),
         b"predictions.jsonl"])
    # a bytes path, and the command line (argv decoded with surrogateescape, as Python does)
    assert len(predict_files(predictor, [raw], tmp_path / "out2", progress=False).records) == 1
    args = ["predict", "--config", "tutorial", "--checkpoint", str(custom_checkpoint), *_sets(custom_overrides),
            "--no-progress", os.fsdecode(raw), "--out", str(tmp_path / "out3")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "caf\\xe9.png: " in captured.out and not captured.err


def test_a_failed_overlay_leaves_no_orphan_label_map(predictor, tmp_path, monkeypatch):
    import cagnet.predict as predict_module

    inputs = _two_images(tmp_path / "in")
    real = predict_module.write_overlay_png
    calls = []

    def failing(stream, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("overlay failed")
        return real(stream, *args, **kwargs)

    monkeypatch.setattr(predict_module, "write_overlay_png", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="overlay failed"):
        predict_files(predictor, [inputs], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "predictions.jsonl"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1


# ---------------------------------------------------------------- symbolic links
def test_symlinked_folders_are_followed_and_loops_end(predictor, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(_random_image(12, 18, 1)).save(inputs / "a.png")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(_random_image(12, 18, 2)).save(other / "b.png")
    (inputs / "link").symlink_to(other, target_is_directory=True)      # followed
    (inputs / "link2").symlink_to(other, target_is_directory=True)     # the same real folder: read once
    (inputs / "sub" / "up").symlink_to(inputs, target_is_directory=True)   # a loop to an ancestor
    (inputs / "self").symlink_to(".", target_is_directory=True)         # a loop to itself
    inputs_found, problems = collect_inputs([inputs], tmp_path / "out")
    assert [i.name for i in inputs_found] == ["a", "link/b"] and not problems
    run = predict_files(predictor, [inputs], tmp_path / "out", progress=False)
    assert [Path(r["image"]).name for r in run.records] == ["a.png", "b.png"]
    assert (tmp_path / "out" / "link" / "b_labels.png").is_file()
    # a link into the output folder is not read back
    (inputs / "outputs").symlink_to(tmp_path / "out", target_is_directory=True)
    again, _ = collect_inputs([inputs], inputs / "outputs")
    assert [i.name for i in again] == ["a", "link/b"]


# ---------------------------------------------------------------- errors of the system
@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")])
def test_a_write_error_keeps_the_images_done(predictor, tmp_path, monkeypatch, code, reason):
    import cagnet.predict as predict_module

    inputs = _two_images(tmp_path / "in")
    real = predict_module.atomic_write

    def failing(path, write):
        if Path(path).name == "b_labels.png":
            raise OSError(code, reason)
        return real(path, write)

    monkeypatch.setattr(predict_module, "atomic_write", failing)
    out = tmp_path / "out"
    with pytest.raises(CagnetError) as caught:
        predict_files(predictor, [inputs], out, progress=False)
    assert str(caught.value) == f"{out / 'b_labels.png'}: {reason}"
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "predictions.jsonl"]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["a.png"]
    assert Image.open(out / "a_labels.png").size == (143, 97)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to recognise the records file")
def test_a_record_that_cannot_be_written_is_cut_off_and_its_outputs_removed(predictor, tmp_path, monkeypatch):
    inputs = _two_images(tmp_path / "in")
    Image.fromarray(_random_image(20, 20, 3)).save(inputs / "c.png")
    real = os.write

    def half_then_full(fd, data):   # the disk fills up in the middle of the second record
        if os.readlink(f"/proc/self/fd/{fd}").endswith("predictions.jsonl"):
            real(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    out = tmp_path / "out"
    with pytest.raises(CagnetError, match=f"^{out / 'predictions.jsonl'}: No space left on device$"):
        predict_files(predictor, [inputs], out, progress=False)
    monkeypatch.undo()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["image"].endswith("a.png")
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "predictions.jsonl"]


def test_cli_predict_write_errors_are_one_line(custom_overrides, custom_checkpoint, tmp_path, monkeypatch,
                                               cli_error):
    import cagnet.predict as predict_module

    inputs = _two_images(tmp_path / "in")
    args = ["predict", "--config", "tutorial", "--checkpoint", str(custom_checkpoint), *_sets(custom_overrides),
            "--no-progress", str(inputs)]
    (tmp_path / "file.txt").write_text("a file\n")
    err = cli_error([*args, "--out", str(tmp_path / "file.txt" / "out")])
    assert err == f"error: {tmp_path / 'file.txt' / 'out'}: cannot be made, {tmp_path / 'file.txt'} is a file"
    err = cli_error([*args, "--out", str(tmp_path / "file.txt")])
    assert err == f"error: {tmp_path / 'file.txt'}: exists and is not a folder"
    real = predict_module.atomic_write

    def full_disk(path, write):
        if Path(path).name == "b_overlay.png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(predict_module, "atomic_write", full_disk)
    out = tmp_path / "out"
    err = cli_error([*args, "--out", str(out)])
    assert err == f"error: {out / 'b_overlay.png'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "predictions.jsonl"]


def test_overlay_and_label_pngs_do_not_depend_on_the_band_size(predictor, tmp_path, monkeypatch):
    import cagnet.predict.images as images_module

    image = _random_image(97, 143, 9)
    Image.fromarray(image).save(tmp_path / "a.png")
    predict_files(predictor, [tmp_path / "a.png"], tmp_path / "one_band", progress=False, seen_penalty=1.0)
    # bands of 5 rows: the hatch period (9 px here) does not divide them, so its stripes must be
    # continued across bands
    monkeypatch.setattr(images_module, "BAND_PIXELS", 143 * 5)
    predict_files(predictor, [tmp_path / "a.png"], tmp_path / "bands", progress=False, seen_penalty=1.0)
    for name in ("a_labels.png", "a_overlay.png"):
        one = Image.open(tmp_path / "one_band" / name)
        many = Image.open(tmp_path / "bands" / name)
        assert one.mode == many.mode and np.array_equal(np.asarray(one), np.asarray(many)), name
    labels = np.asarray(Image.open(tmp_path / "bands" / "a_labels.png"))
    unseen = np.isin(labels, predictor.info.eval_ids[predictor.info.num_seen:])
    assert unseen.any() and not unseen.all()   # hatched pixels and plain ones


def test_class_argmax_is_torch_argmax_ties_included():
    values = torch.randint(-3, 3, (7, 40, 30), generator=torch.Generator().manual_seed(3)).float()   # many ties
    labels = class_argmax(values)
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), values.argmax(0))
    assert torch.equal(class_argmax(values.transpose(1, 2)).long(), values.transpose(1, 2).argmax(0))


def test_banded_upsampling_with_a_budget_below_the_column_pass():
    # 4 * K * h * W bytes above max_bytes: each band interpolates its own columns
    logits = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(4))
    size, budget = (97, 143), 4 * 6 * 97 * 5                          # bands of 5 columns
    upsampled = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]
    assert 4 * 6 * 16 * 143 > budget
    bands = list(iter_upsampled_logits(logits, size, max_bytes=budget))
    assert len(bands) == 29 and bands[-1][0] == slice(140, 143)
    for columns, values in bands:
        torch.testing.assert_close(values, upsampled[:, :, columns], rtol=0, atol=1e-5)   # rounding only
    top2 = upsampled.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-5
    labels = upsampled_argmax(logits, size, max_bytes=budget)
    assert torch.equal(labels[decided], upsampled.argmax(0)[decided]) and decided.float().mean() > 0.99
