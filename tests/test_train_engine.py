"""The training loop: exact resume, non-finite guard, schedules, checkpoints, DDP on CPU."""
from __future__ import annotations

import json
import math
import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from cagnet.config import load_train_config
from cagnet.errors import CagnetError, CheckpointError, ConfigError, DatasetError
from cagnet.models import build_cagnet, load_checkpoint
from cagnet.train import engine, runs
from cagnet.train.checkpoint import load_training_checkpoint
from cagnet.train.engine import NonFiniteLossError, step_kind, train
from cagnet.train.runs import read_jsonl

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(overrides, *extra):
    return load_train_config("tutorial", [*overrides, *extra])


def _state_equal(a: dict, b: dict) -> list[str]:
    """Keys whose tensors differ (exact comparison)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _optimizer_tensors(payload):
    out = {}
    for name, state in payload["optimizers"].items():
        for index, per_param in state["state"].items():
            for key, value in per_param.items():
                if torch.is_tensor(value):
                    out[f"{name}.{index}.{key}"] = value
    return out


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_a_straight_run(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=6", "runtime.checkpoint_interval=2")
    straight = train(config, "step1", tmp_path / "straight", progress=False, verbose=False)
    first = train(config, "step1", tmp_path / "resumed", progress=False, verbose=False, stop_at=3)
    assert not first.completed and first.iteration == 3 and first.scores is None
    assert load_training_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 3
    resumed = train(config, "step1", tmp_path / "resumed", progress=False, verbose=False, resume=True)
    assert resumed.completed and resumed.iteration == 6
    assert _state_equal(straight.model.state_dict(), resumed.model.state_dict()) == []
    a = load_training_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_training_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert _state_equal(_optimizer_tensors(a), _optimizer_tensors(b)) == []
    assert a["data"] == b["data"]
    # the logs of the resumed run continue the first part's without duplicates
    straight_log = read_jsonl(tmp_path / "straight" / "log.jsonl")
    resumed_log = read_jsonl(tmp_path / "resumed" / "log.jsonl")
    assert [r["iteration"] for r in resumed_log] == list(range(1, 7))
    for x, y in zip(straight_log, resumed_log):
        assert x["loss_G"] == y["loss_G"] and x["loss_D"] == y["loss_D"]


@pytest.mark.slow
def test_mixed_schedule_resume_and_step_kinds(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=1", "schedules.mixed.iterations=6",
                     "schedules.mixed.interval_step1=2", "schedules.mixed.interval_step2=1")
    train(config, "step1", tmp_path / "step1", progress=False, verbose=False)
    straight = train(config, "mixed", tmp_path / "mixed", progress=False, verbose=False)
    assert [r["step"] for r in read_jsonl(tmp_path / "mixed" / "log.jsonl")] == \
        ["step1", "step1", "step2", "step1", "step1", "step2"]
    train(config, "mixed", tmp_path / "mixed2", progress=False, verbose=False, stop_at=3,
          init_model=tmp_path / "step1" / "checkpoint.pt")
    resumed = train(config, "mixed", tmp_path / "mixed2", progress=False, verbose=False, resume=True)
    assert _state_equal(straight.model.state_dict(), resumed.model.state_dict()) == []
    # the frozen backbone did not move
    start = build_cagnet(straight.model.config)
    load_checkpoint(start, tmp_path / "step1" / "checkpoint.pt")
    final = straight.model.state_dict()
    for key, value in start.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(value, final[key].cpu()), key


def test_step_kind_alternation():
    from cagnet.config import ScheduleConfig

    mixed = ScheduleConfig(iterations=10, interval_step1=3, interval_step2=2, first="step1")
    assert [step_kind("mixed", mixed, i) for i in range(7)] == ["step1"] * 3 + ["step2"] * 2 + ["step1"] * 2
    first2 = ScheduleConfig(iterations=10, interval_step1=1, interval_step2=2, first="step2")
    assert [step_kind("st_mixed", first2, i) for i in range(4)] == ["step2", "step2", "step1", "step2"]
    assert step_kind("st", mixed, 4) == "st" and step_kind("step1", mixed, 4) == "step1"


def _nan_mmd_at_call(monkeypatch, call: int) -> dict[str, int]:
    """Make the engine's MMD loss return NaN at its ``call``-th call (1-based); returns the
    call counter ``{"n": calls so far}``."""
    calls = {"n": 0}
    real_mmd = engine.steps.mmd_loss

    def mmd_that_overflows(*args, **kwargs):
        calls["n"] += 1
        value = real_mmd(*args, **kwargs)
        return value * float("nan") if calls["n"] == call else value

    monkeypatch.setattr(engine.steps, "mmd_loss", mmd_that_overflows)
    return calls


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_train_overrides, tmp_path, monkeypatch):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=5", "runtime.checkpoint_interval=1")
    _nan_mmd_at_call(monkeypatch, 3)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, "step1", tmp_path / "run", progress=False, verbose=False)
    message = str(info.value)
    assert "non-finite loss" in message and "iteration 3" in message
    assert "loss_G" in message or "mmd" in message
    assert "checkpoint.pt (iteration 2)" in message
    assert isinstance(info.value, CagnetError) and "\n" not in message
    payload = load_training_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values() if v.is_floating_point())
    assert len(read_jsonl(tmp_path / "run" / "log.jsonl")) == 2


def test_non_finite_loss_inside_a_block_stops_at_the_next_check(tiny_train_overrides, tmp_path, monkeypatch):
    """Losses are read back once per block (log_interval): a NaN at iteration 6 is found at the
    check of iteration 8, named with its own iteration; the weights updated since the check at
    4 are not saved, and the checkpoint of iteration 4 (finite) stays."""
    config = _config(tiny_train_overrides, "schedules.step1.iterations=12", "runtime.log_interval=4",
                     "runtime.checkpoint_interval=4")
    calls = _nan_mmd_at_call(monkeypatch, 6)
    written = []
    real_write_many = runs.JsonLines.write_many

    def recording_write_many(self, records):
        written.append([r["iteration"] for r in records])
        real_write_many(self, records)

    monkeypatch.setattr(runs.JsonLines, "write_many", recording_write_many)
    with pytest.raises(NonFiniteLossError) as info:
        train(config, "step1", tmp_path / "run", progress=False, verbose=False)
    message = str(info.value)
    assert "iteration 6" in message and "mmd = nan" in message and "loss_G = nan" in message
    assert "checkpoint.pt (iteration 4)" in message and "\n" not in message
    assert calls["n"] == 8          # the run went on to the check at iteration 8
    assert written == [[1, 2, 3, 4], [5]]     # records in blocks; none from iteration 6 on
    payload = load_training_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values() if v.is_floating_point())


def test_non_finite_weights_are_not_saved(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2")
    trainer = engine.Trainer(config, "step1", tmp_path / "run", progress=False, verbose=False)
    try:
        trainer._saved_iteration = None
        with torch.no_grad():
            trainer.model.generator.output.weight[0, 0] = float("inf")
        with pytest.raises(NonFiniteLossError, match="non-finite weights .*generator.output.weight"):
            trainer.save_checkpoint()
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
    finally:
        trainer.log.close()
        trainer.eval_log.close()
        trainer._settings.close()


def test_checkpoint_contents_and_safe_loading(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2")
    result = train(config, "step1", tmp_path / "run", progress=False, verbose=False)
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert payload["iteration"] == 2 and payload["schedule"] == "step1"
    assert set(payload["optimizers"]) == {"backbone", "generator", "discriminator"}
    assert set(payload["rng"][0]) >= {"python", "numpy", "torch"}
    assert payload["config"]["name"] == "tutorial"
    assert "scale" in payload["grad_scaler"] or payload["grad_scaler"] == {}
    # any model loader reads it (iteration + state_dict)
    model = build_cagnet(result.model.config)
    report = load_checkpoint(model, tmp_path / "run" / "checkpoint.pt")
    assert report.layout == "project" and report.iteration == 2
    assert not list(tmp_path.joinpath("run").glob("*.tmp"))
    for name in ("config.yaml", "log.jsonl", "eval.jsonl", "loss_curves.png", "predictions.png", "eval_curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    record = read_jsonl(tmp_path / "run" / "log.jsonl")[0]
    assert {"iteration", "step", "loss_D", "loss_B", "loss_G", "kl", "mmd", "lr_backbone", "seconds"} <= set(record)
    evaluation = read_jsonl(tmp_path / "run" / "eval.jsonl")[-1]
    assert evaluation["iteration"] == 2 and evaluation["num_images"] == 8
    assert 0.0 <= evaluation["miou"] <= 1.0


def test_setup_errors_are_one_line(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.mixed.iterations=2")
    with pytest.raises(CheckpointError, match="train --schedule step1 first"):
        train(config, "mixed", tmp_path / "chain" / "mixed", progress=False, verbose=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(config, "step1", tmp_path / "empty", progress=False, verbose=False, resume=True)
    with pytest.raises(DatasetError, match="dataset folder not found"):
        train(_config(tiny_train_overrides, f"data.root={tmp_path / 'nowhere'}"), "step1", tmp_path / "x",
              progress=False, verbose=False)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(_config(tiny_train_overrides, "runtime.amp=fp16"), "step1", tmp_path / "y",
              progress=False, verbose=False)
    other = build_cagnet("tiny", num_seen=12, num_unseen=4, feature_dim=32, embedding_dim=100)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match the model"):
        train(config, "step1", tmp_path / "z", progress=False, verbose=False, init_model=tmp_path / "other.pt")


def test_resume_refuses_a_changed_config(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2")
    train(config, "step1", tmp_path / "run", progress=False, verbose=False, stop_at=1)
    changed = _config(tiny_train_overrides, "schedules.step1.iterations=2", "schedules.step1.backbone_lr=0.1")
    with pytest.raises(ConfigError, match="schedules.step1.backbone_lr"):
        train(changed, "step1", tmp_path / "run", progress=False, verbose=False, resume=True)


def test_self_training_schedule_runs(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.st.iterations=2", "schedules.st.batch_size=2",
                     "schedules.st.crop_size=40", "runtime.sample_images=0")
    result = train(config, "st", tmp_path / "st", progress=False, verbose=False,
                   init_model=_step1_checkpoint(tiny_train_overrides, tmp_path))
    assert result.completed
    records = read_jsonl(tmp_path / "st" / "log.jsonl")
    assert [r["step"] for r in records] == ["st", "st"]
    assert all(math.isfinite(r["loss_B"]) for r in records)


def _step1_checkpoint(overrides, tmp_path):
    config = _config(overrides, "schedules.step1.iterations=1", "runtime.sample_images=0")
    return train(config, "step1", tmp_path / "step1", progress=False, verbose=False).checkpoint


# ------------------------------------------------------------------------------ DDP on CPU
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, overrides, schedule, out_dir, init_model):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    config = load_train_config("tutorial", overrides)
    result = train(config, schedule, out_dir, progress=False, verbose=False, init_model=init_model)
    torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, f"{out_dir}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["step1", "mixed"])
def test_ddp_two_cpu_processes_keep_identical_parameters(tiny_train_overrides, tmp_path, schedule):
    overrides = [*tiny_train_overrides, "data.batch_size=2", "runtime.sample_images=0",
                 f"schedules.{schedule}.iterations=3"]
    if schedule == "mixed":
        overrides += ["schedules.mixed.interval_step1=1", "schedules.mixed.interval_step2=1"]
    init_model = None
    if schedule != "step1":
        init_model = str(_step1_checkpoint(tiny_train_overrides, tmp_path))
    out_dir = tmp_path / f"ddp_{schedule}"
    out_dir.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), overrides, schedule, str(out_dir), init_model), nprocs=2)
    rank0 = torch.load(out_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(out_dir / "rank1.pt", weights_only=True)
    assert _state_equal(rank0, rank1) == []
    records = read_jsonl(out_dir / "log.jsonl")
    assert len(records) == 3 and all(math.isfinite(r["loss_D"]) for r in records)
    if init_model:   # the parameters did change (identically on both processes)
        start = build_cagnet(load_train_config("tutorial").model, num_seen=12, num_unseen=4, embedding_dim=100)
        load_checkpoint(start, init_model)
        assert _state_equal(start.state_dict(), rank0) != []
    checkpoint = load_training_checkpoint(out_dir / "checkpoint.pt")
    assert len(checkpoint["rng"]) == 2
    assert json.loads((out_dir / "eval.jsonl").read_text().splitlines()[-1])["num_images"] == 8


def test_bf16_autocast_training_run_on_cpu(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2", "runtime.amp=bf16",
                     "runtime.sample_images=0")
    result = train(config, "step1", tmp_path / "bf16", progress=False, verbose=False)
    records = read_jsonl(tmp_path / "bf16" / "log.jsonl")
    assert len(records) == 2
    assert all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float))
    torch.manual_seed(config.runtime.seed)   # the trainer initialises the model from this seed
    initial = build_cagnet(config.model, num_seen=12, num_unseen=4, embedding_dim=100).state_dict()
    trained = result.model.state_dict()
    weights = [k for k in initial if k.endswith("weight")]
    moved = [k for k in weights if not torch.equal(initial[k], trained[k])]
    assert len(moved) > 0.8 * len(weights)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_init_from_an_original_layout_checkpoint(tiny_train_overrides, tmp_path, capsys):
    from cagnet.models import save_original_checkpoint

    # the original layout has no normalisation of h: the tutorial model with it cannot be written so
    tutorial = build_cagnet(_config(tiny_train_overrides).model, num_seen=12, num_unseen=4, embedding_dim=100)
    with pytest.raises(CheckpointError, match="semantic_norm.*no counterpart in the original layout"):
        save_original_checkpoint(tutorial, tmp_path / "refused.pth")
    assert not (tmp_path / "refused.pth").exists()
    config = _config(tiny_train_overrides, "schedules.step1.iterations=1", "runtime.sample_images=0",
                     "model.semantic_norm=none")
    source = build_cagnet(config.model, num_seen=12, num_unseen=4, embedding_dim=100)
    save_original_checkpoint(source, tmp_path / "original.pth", iteration=40000)
    train(config, "step1", tmp_path / "run", progress=False, verbose=True, init_model=tmp_path / "original.pth")
    err = capsys.readouterr().err
    assert "original layout" in err and "iteration 40000" in err


@pytest.mark.slow
@pytest.mark.parametrize("eval_split, expected", [("auto", "validation"), ("test", "test")])
def test_runs_score_the_configured_split(tiny_train_overrides, tmp_path, eval_split, expected):
    config = _config(tiny_train_overrides, "schedules.step1.iterations=1", f"data.eval_split={eval_split}")
    result = train(config, "step1", tmp_path / "run", progress=False, verbose=False)
    final = read_jsonl(tmp_path / "run" / "eval.jsonl")[-1]
    assert final["split"] == expected and final["num_images"] == 8 and result.scores["hiou"] == final["hiou"]


def test_a_missing_validation_split_is_a_one_line_error(custom_dataset, tiny_pretrain_overrides):
    from cagnet.train.loading import evaluation_dataset, prepare_dataset, resolve_eval_split

    config = load_train_config("tutorial", [f"data.root={custom_dataset}", *tiny_pretrain_overrides])
    info = prepare_dataset(config)
    assert resolve_eval_split("auto", info) == "test"
    with pytest.raises(DatasetError, match=r"my_dataset: no validation split"):
        evaluation_dataset(config, info, "validation")
    with pytest.raises(DatasetError, match="test or validation"):
        evaluation_dataset(config, info, "train")


@pytest.mark.slow
def test_voc12_architecture_trains_from_random_weights_at_the_original_rates(tiny_train_benchmark, tmp_path,
                                                                             capsys):
    """The voc12 recipe (ResNet-101, frozen BN, 3 scales, SGD at the DeepLabV2 rates) from random
    weights at a small size: the stable initialisation and its warning, and finite losses."""
    config = load_train_config("voc12", [
        f"data.root={tiny_train_benchmark}", "data.embedding=glove", "data.crop_size=41", "data.batch_size=2",
        "data.test_size=33", "data.test_limit=2", "data.num_workers=0", "schedules.step1.iterations=4",
        "runtime.device=cpu", "runtime.num_threads=1", "runtime.checkpoint_interval=0", "runtime.sample_images=0",
        "runtime.log_interval=2", "runtime.progress=false"])
    result = train(config, "step1", tmp_path / "voc12", progress=False, verbose=True)
    err = capsys.readouterr().err
    warnings_ = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings_) == 1 and "random weights" in warnings_[0] and "pretrained" in warnings_[0]
    records = read_jsonl(tmp_path / "voc12" / "log.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for r in records for v in r.values() if isinstance(v, float))
    assert result.model.config.backbone_blocks == (3, 4, 23, 3) and len(result.model.config.scales) == 3


def test_one_process_under_torchrun_runs_the_distributed_code(tiny_train_overrides, tmp_path, monkeypatch):
    """``torchrun --nproc_per_node 1`` (its environment, here with gloo): the process joins a
    group, the networks are DistributedDataParallel, and the group is gone afterwards."""
    import torch.distributed as dist

    for name, value in dict(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(name, value)
    config = _config(tiny_train_overrides, "schedules.step1.iterations=2", "runtime.sample_images=0")
    trainer = engine.Trainer(config, "step1", tmp_path / "run", progress=False, verbose=False)
    assert trainer.ctx.enabled and dist.is_initialized() and dist.get_backend() == "gloo"
    assert isinstance(trainer.parts.generator, torch.nn.parallel.DistributedDataParallel)
    result = trainer.run()
    assert result.completed and not dist.is_initialized()
    assert len(read_jsonl(tmp_path / "run" / "log.jsonl")) == 2
