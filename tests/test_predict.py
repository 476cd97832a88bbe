"""cagnet.predict and ``python -m cagnet predict``: label maps, overlays and class shares of any image."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from cagnet.cli import main
from cagnet.config import load_train_config
from cagnet.data import load_dataset_info, resize_labels
from cagnet.data.embed import embed_class_names
from cagnet.data.transforms import TestTransform
from cagnet.errors import CagnetError
from cagnet.evaluate import predict_labels, predict_logits
from cagnet.models import build_cagnet
from cagnet.predict import Predictor, palette_png, predict_files, upsampled_argmax
from cagnet.viz import class_palette

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
