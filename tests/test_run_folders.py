"""Run folders that nothing corrupts: one writer, torn log lines, runs never replaced silently,
unfinished upstream runs, the seed on resume, stale temporary files, full disks."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from cagnet.config import load_train_config
from cagnet.errors import CheckpointError, ConfigError, RunFolderError
from cagnet.train import checkpoint as ckpt
from cagnet.train import runs
from cagnet.train.engine import train
from cagnet.train.runs import RunLock, read_jsonl

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(overrides, *extra):
    return load_train_config("tutorial", [*overrides, "schedules.step1.iterations=2", "schedules.mixed.iterations=2",
                                          *extra])


def _cli_train(overrides, folder, *extra):
    """``python -m cagnet train`` arguments of :func:`_config`'s run into ``folder``."""
    return ["train", "--config", "tutorial", *[f"--set={o}" for o in overrides], "--set", "schedules.step1.iterations=2",
            "--set", "schedules.mixed.iterations=2", "--out", str(folder), "--no-progress", *extra]


def _train(config, folder, schedule="step1", **kwargs):
    return train(config, schedule, folder, progress=False, verbose=False, **kwargs)


# ------------------------------------------------------------------------------ one writer
def test_a_second_writer_is_refused_naming_the_folder_and_the_process(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides)
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from cagnet.train.runs import RunLock\n"
        f"RunLock({str(folder)!r}).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"another process is writing this run folder \\(pid {holder.pid}"):
            _train(config, folder)
        assert not (folder / "log.jsonl").exists() and not (folder / "checkpoint.pt").exists()
    finally:
        holder.kill()      # SIGKILL: the kernel releases its lock
        holder.wait()
    result = _train(config, folder)
    assert result.completed
    assert (folder / runs.LOCK_NAME).read_text() == ""       # released at the end


def test_two_trainers_in_one_process_cannot_share_a_folder(tiny_train_overrides, tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunFolderError, match="another process is writing"):
            _train(_config(tiny_train_overrides), tmp_path / "run")
    assert _train(_config(tiny_train_overrides), tmp_path / "run").completed


def test_a_stale_pid_lock_without_flock_is_taken_over(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / runs.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    monkeypatch.setattr(RunLock, "_flock", lambda self, fd: False)     # a file system without locks
    with RunLock(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (folder / runs.LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(RunFolderError, match=f"pid {os.getppid()}"):
        RunLock(folder).acquire()


# ------------------------------------------------------------------------------ torn lines
def test_read_jsonl_drops_a_torn_last_line_and_refuses_a_spliced_one(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"itera')
    told = []
    assert read_jsonl(path, report=told.append) == [{"iteration": 1}, {"iteration": 2}]
    assert len(told) == 1 and "log.jsonl: the last line is incomplete" in told[0]
    path.write_text('{"iteration": 1}\n0}\n')                     # a record that is valid JSON but not one
    with pytest.raises(RunFolderError, match="log.jsonl: line 2 is not a JSON record"):
        read_jsonl(path)
    path.write_text('{"iteration": 1}\n{"itera{"iteration": 2}\n{"iteration": 3}\n')
    with pytest.raises(RunFolderError, match="line 2"):
        read_jsonl(path)


def test_resume_repairs_a_torn_last_line_and_finished_run_tolerates_one(tiny_train_overrides, tmp_path, capsys):
    config = _config(tiny_train_overrides, "runtime.checkpoint_interval=1")
    folder = tmp_path / "run"
    _train(config, folder, stop_at=1)
    with open(folder / "log.jsonl", "a") as stream:
        stream.write('{"iteration": 2, "loss')                    # a kill during the next log write
    with open(folder / "eval.jsonl", "a") as stream:
        stream.write('{"iter')
    assert not runs.finished_run(folder, "step1", config)
    result = train(config, "step1", folder, progress=False, resume=True)
    assert result.completed
    assert "the last line is incomplete" in capsys.readouterr().err
    assert [r["iteration"] for r in read_jsonl(folder / "log.jsonl")] == [1, 2]
    assert (folder / "log.jsonl").read_text().endswith("}\n")
    assert runs.finished_run(folder, "step1", config)
    with open(folder / "eval.jsonl", "a") as stream:                # torn after the final record
        stream.write('{"iter')
    assert runs.finished_run(folder, "step1", config)


# ------------------------------------------------------------------------------ replacing runs
def test_a_run_is_not_replaced_without_force(tiny_train_overrides, tmp_path, cli_error):
    config = _config(tiny_train_overrides)
    folder = tmp_path / "run"
    _train(config, folder)
    before = (folder / "checkpoint.pt").read_bytes(), (folder / "log.jsonl").read_text()
    with pytest.raises(RunFolderError, match="holds a finished run of step1; pass --resume .* or --force"):
        _train(config, folder)
    assert ((folder / "checkpoint.pt").read_bytes(), (folder / "log.jsonl").read_text()) == before
    args = _cli_train(tiny_train_overrides, folder)
    assert "--force" in cli_error(args)
    assert "choose one" in cli_error([*args, "--resume", "--force"])
    stopped = tmp_path / "stopped"
    _train(config, stopped, stop_at=1)
    with pytest.raises(RunFolderError, match="stopped at iteration 1 of 2"):
        _train(config, stopped)
    replaced = _train(config, folder, force=True)
    assert replaced.completed and len(read_jsonl(folder / "log.jsonl")) == 2


@pytest.mark.parametrize("stop_at", [0, -3, 1.5, True])
def test_stop_at_must_be_a_positive_iteration(tiny_train_overrides, tmp_path, stop_at):
    with pytest.raises(ConfigError, match="--stop-at: must be a positive iteration"):
        _train(_config(tiny_train_overrides), tmp_path / "run", stop_at=stop_at)
    assert not (tmp_path / "run").exists()


def test_resume_of_a_finished_run_does_nothing_and_says_so(tiny_train_overrides, tmp_path, capsys):
    config = _config(tiny_train_overrides)
    folder = tmp_path / "run"
    first = _train(config, folder)
    before = {name: (folder / name).read_bytes() for name in ("checkpoint.pt", "log.jsonl", "eval.jsonl")}
    again = train(config, "step1", folder, progress=False, resume=True)
    assert "holds a finished run of step1 (iteration 2); nothing to resume" in capsys.readouterr().err
    assert again.completed and again.iteration == 2
    assert again.scores["hiou"] == pytest.approx(first.scores["hiou"])
    assert {name: (folder / name).read_bytes() for name in before} == before     # no duplicate evaluation


def test_resume_with_another_seed_is_refused(tiny_train_overrides, tmp_path):
    config = _config(tiny_train_overrides)
    _train(config, tmp_path / "run", stop_at=1)
    config_yaml = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="runtime.seed is 7, the checkpoint's run has seed 0"):
        _train(_config(tiny_train_overrides, "runtime.seed=7"), tmp_path / "run", resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == config_yaml
    assert not runs.finished_run(tmp_path / "run", "step1", _config(tiny_train_overrides, "runtime.seed=7"))


def test_a_schedule_refuses_an_unfinished_upstream_run(tiny_train_overrides, tmp_path, capsys):
    config = _config(tiny_train_overrides)
    _train(config, tmp_path / "step1", stop_at=1)
    with pytest.raises(RunFolderError, match=r"step1/checkpoint.pt, a run of step1 that stopped at iteration 1 of 2; "
                                             r"finish it .* or pass --allow-unfinished-start"):
        _train(config, tmp_path / "mixed", schedule="mixed")
    assert not (tmp_path / "mixed" / "checkpoint.pt").exists()
    result = train(config, "mixed", tmp_path / "mixed", progress=False, allow_unfinished_start=True)
    assert result.completed and "--allow-unfinished-start" in capsys.readouterr().err


def test_stale_temporary_files_are_removed_at_the_next_start(tiny_train_overrides, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / ".checkpoint.pt.k3j2h1.tmp"              # what a kill during a checkpoint write leaves
    stale.write_bytes(b"\0" * 4096)
    kept = folder / "notes.txt"
    kept.write_text("mine")
    _train(_config(tiny_train_overrides), folder)
    assert not stale.exists() and kept.read_text() == "mine"
    assert not list(folder.glob(".*.tmp"))


# ------------------------------------------------------------------------------ OS errors
@pytest.fixture()
def cli_last_error(capsys):
    """``cli_last_error(argv)`` runs the command line in-process, checks exit code 2, no traceback,
    and that stderr ends with one ``error: ...`` line (training notes may come before it); returns it."""
    from cagnet.cli import main

    def run(argv: list[str]) -> str:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err
        last = err.splitlines()[-1]
        assert last.startswith("error: ")
        return last

    return run


class _FullDiskFile:
    """A binary file whose writes fail with ENOSPC while ``armed["on"]``, as on a full disk."""

    def __init__(self, stream, armed):
        self.stream, self.armed = stream, armed

    def write(self, data):
        if self.armed["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.stream.__exit__(*exc)


def _failing_checkpoint_write(monkeypatch, fail_at_iteration: int):
    """The disk is full for every checkpoint write from ``fail_at_iteration`` on: torch.save's
    writes fail, and torch reports that as a RuntimeError of its own."""
    import cagnet.files

    armed = {"on": False}
    real_fdopen, real_save = os.fdopen, torch.save
    monkeypatch.setattr(cagnet.files.os, "fdopen", lambda *args, **kwargs: _FullDiskFile(real_fdopen(*args, **kwargs),
                                                                                         armed))

    def save(payload, stream, *args, **kwargs):
        armed["on"] = (isinstance(payload, dict) and payload.get("format") == ckpt.CHECKPOINT_FORMAT
                       and payload["iteration"] >= fail_at_iteration)
        try:
            return real_save(payload, stream, *args, **kwargs)
        finally:
            armed["on"] = False

    monkeypatch.setattr(ckpt.torch, "save", save)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_one(tiny_train_overrides, tmp_path,
                                                                            monkeypatch, cli_last_error):
    folder = tmp_path / "run"
    config = _config(tiny_train_overrides, "runtime.checkpoint_interval=1")
    _failing_checkpoint_write(monkeypatch, fail_at_iteration=2)
    with pytest.raises(OSError) as caught:
        _train(config, folder)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(folder / "checkpoint.pt")
    assert ckpt.load_training_checkpoint(folder / "checkpoint.pt")["iteration"] == 1
    assert not list(folder.glob(".*.tmp"))
    line = cli_last_error(_cli_train(tiny_train_overrides, folder, "--set", "runtime.checkpoint_interval=1",
                                     "--resume"))
    assert line == f"error: {folder / 'checkpoint.pt'}: No space left on device"
    monkeypatch.undo()
    assert _train(config, folder, resume=True).completed     # nothing lost: the run continues from iteration 1


def test_a_real_full_disk_is_one_line_and_loses_nothing(tiny_train_overrides, small_filesystem, cli_last_error):
    """On a 1 MiB file system (a tmpfs: needs root) the first checkpoint (a few MB) cannot be written."""
    folder = small_filesystem / "run"
    line = cli_last_error(_cli_train(tiny_train_overrides, folder))
    assert line.startswith(f"error: {folder}") and line.endswith("No space left on device")
    assert not list(folder.glob(".*.tmp")) and not (folder / "checkpoint.pt").exists()


def test_an_out_folder_below_a_file_is_one_line(tiny_train_overrides, tmp_path, cli_error):
    (tmp_path / "file").write_text("x")
    line = cli_error(_cli_train(tiny_train_overrides, tmp_path / "file" / "run"))
    assert str(tmp_path / "file") in line


def test_a_read_only_run_folder_is_one_line(tiny_train_overrides, tmp_path, cli_error):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        line = cli_error(_cli_train(tiny_train_overrides, folder))
        assert str(folder) in line and "Permission denied" in line
    finally:
        folder.chmod(0o700)
