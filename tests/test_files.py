"""Atomic writes and the refusal to overwrite without --force."""
from __future__ import annotations

import os
import stat

import pytest

from cagnet.errors import CagnetError
from cagnet.files import atomic_write, atomic_write_text, refuse_existing


def test_an_atomic_write_gets_the_usual_file_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out" / "table.md", "hello")
    finally:
        os.umask(previous)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644   # not the 0600 of a temporary file
    assert [p.name for p in path.parent.iterdir()] == ["table.md"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "scores.json", "old")

    def fail(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_existing_outputs_are_refused_without_force(tmp_path):
    existing = atomic_write_text(tmp_path / "a.png", "x")
    with pytest.raises(CagnetError, match="a.png"):
        refuse_existing([tmp_path / "b.png", existing], force=False)
    refuse_existing([existing], force=True)
    refuse_existing([tmp_path / "b.png"], force=False)
