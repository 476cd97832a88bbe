"""``python -m cagnet train`` / ``evaluate`` end to end on the tiny benchmark, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cagnet.cli import build_parser, main
from cagnet.models import build_cagnet

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.mark.slow
def test_train_then_evaluate_the_tutorial_config(tiny_train_overrides, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--config", "tutorial", "--schedule", "step1", "--out", str(run), "--no-progress",
                 *_sets(tiny_train_overrides), "--set", "schedules.step1.iterations=4",
                 "--set", "data.train_limit=12"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "finished at iteration 4" in out and "mean IoU" in out
    assert (run / "checkpoint.pt").is_file() and (run / "log.jsonl").is_file()
    assert len((run / "log.jsonl").read_text().splitlines()) == 4

    report = tmp_path / "scores.json"
    for protocol in ("original", "full"):
        code = main(["evaluate", "--config", "tutorial", "--checkpoint", str(run / "checkpoint.pt"), "--force",
                     "--protocol", protocol, "--json", str(report), "--no-progress", *_sets(tiny_train_overrides)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "8 test images" in out and "harmonic" in out
        record = json.loads(report.read_text())
        assert record["config"] == "tutorial" and record["protocol"] == protocol
        assert record["checkpoint"] == str(run / "checkpoint.pt")
        assert record["num_images"] == 8
        for key in ("miou", "seen_miou", "unseen_miou", "hiou", "pixel_acc", "mean_acc", "fwiou", "class_iou"):
            assert key in record["scores"], key
        assert record["resolved_config"]["name"] == "tutorial"
    args = ["evaluate", "--config", "tutorial", "--checkpoint", str(run / "checkpoint.pt"), "--split",
            "validation", "--json", str(report), "--no-progress", *_sets(tiny_train_overrides)]
    assert main(args) == 2 and "scores.json: exists; pass --force" in capsys.readouterr().err   # before scoring
    code = main([*args, "--force"])
    assert code == 0 and "8 validation images" in capsys.readouterr().out
    assert json.loads(report.read_text())["split"] == "validation"


def test_errors_are_one_line(tiny_train_overrides, tmp_path, cli_error):
    assert "unknown config 'tutorrial'" in cli_error(["train", "--config", "tutorrial"])
    err = cli_error(["train", "--config", "tutorial", "--set", "schedules.step1.iterashuns=3"])
    assert "schedules.step1.iterashuns" in err and "did you mean 'iterations'" in err
    err = cli_error(["train", "--config", "voc12", "--out", str(tmp_path / "v"),
                                   "--set", f"data.root={tmp_path / 'no_voc'}"])
    assert "dataset folder not found" in err
    other = build_cagnet("tiny", num_seen=12, num_unseen=4, embedding_dim=100, feature_dim=32)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    err = cli_error(["evaluate", "--config", "tutorial", "--checkpoint", str(tmp_path / "other.pt"),
                                   "--no-progress", *_sets(tiny_train_overrides)])
    assert "does not match the model" in err and "other.pt" in err
    err = cli_error(["evaluate", "--config", "tutorial", "--checkpoint", str(tmp_path / "none.pt"),
                                   *_sets(tiny_train_overrides)])
    assert "file not found" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    err = cli_error(["evaluate", "--config", "tutorial", "--checkpoint", str(tmp_path / "junk.pt"),
                                   *_sets(tiny_train_overrides)])
    assert "junk.pt" in err


@pytest.mark.parametrize("command, options", [
    ("train", ["--config", "--schedule", "--init-model", "--resume", "--force", "--allow-unfinished-start", "--out", "--set",
               "--stop-at", "--no-progress"]),
    ("evaluate", ["--config", "--checkpoint", "--protocol", "--split", "--json", "--force", "--set", "--no-progress"]),
    ("pretrain", ["--config", "--force", "--set", "--no-progress"]),
    ("ablate", ["--config", "--seeds", "--variants", "--list", "--out", "--set", "--jobs", "--no-progress"]),
    ("embed", ["DATASET_DIR", "--extra-vectors", "--force"]),
    ("predict", ["--config", "--checkpoint", "IMAGE_OR_FOLDER", "--out", "--protocol", "--seen-penalty", "--set",
                 "--force", "--no-progress"]),
])
def test_help_explains_every_option(command, options):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    text = sub.format_help()
    for option in options:
        assert option in text
    for action in sub._actions:
        assert action.help, action.option_strings


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "cagnet", "train", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--schedule" in result.stdout
    result = subprocess.run([sys.executable, "-m", "cagnet", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("check", "data", "train", "evaluate", "benchmark", "embed", "predict", "pretrain", "ablate"):
        assert f"    {command} " in result.stdout or f"    {command}\n" in result.stdout, command


@pytest.mark.slow
def test_train_from_torchvision_resnet_weights(tiny_train_overrides, tmp_path, capsys, cli_error):
    from torchvision.models.resnet import Bottleneck, ResNet

    path = tmp_path / "resnet_small.pth"   # same shapes as the deeplabv2_small body (random weights)
    torch.save(ResNet(Bottleneck, [1, 2, 1, 1]).state_dict(), path)
    args = ["train", "--config", "tutorial", "--out", str(tmp_path / "run"), "--init-model", str(path),
            "--no-progress", *_sets(tiny_train_overrides), "--set", "schedules.step1.iterations=1",
            "--set", "data.train_limit=4"]
    err = cli_error(args)   # the tiny backbone has other shapes
    assert "(torchvision layout) does not match the model" in err and "conv1.weight file [64, 3, 7, 7]" in err
    small = ["--set", "model.backbone=deeplabv2_small", "--set", "model.base_width=64"]
    err = cli_error([*args, *small])
    assert "expect data.normalization=imagenet" in err and "add --set data.normalization=imagenet" in err
    assert main([*args, *small, "--set", "data.normalization=imagenet"]) == 0
    captured = capsys.readouterr()
    assert "finished at iteration 1" in captured.out
    assert "torchvision layout" in captured.err and "ignored (no DeepLabV2 counterpart): fc.weight, fc.bias" in captured.err
