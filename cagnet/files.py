"""Reading text files with one-line errors, and writing output files without ever leaving a
half-written one.

:func:`read_text` reads a UTF-8 file and names it in the error when it cannot.
:func:`atomic_write` writes into a temporary file in the target's folder and renames it onto
the target (``os.replace``, atomic on one file system): a reader, or a crash, sees either the
old file or the complete new one; a write that fails (a full disk, no permission, a folder
that is a file) raises an ``OSError`` naming the target and leaves the old file as it was.
:func:`os_error_message` is the one-line form of such an error that the command line prints. :func:`refuse_existing` is the shared "nothing is overwritten
without ``--force``" check of the commands that write files. :func:`project_root` is where
the project keeps its generated data (``data/``) and runs (``runs/``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from cagnet.errors import CagnetError


def project_root() -> Path:
    """The source checkout holding the package (the folder with ``pyproject.toml`` next to
    ``cagnet/``), else the working directory (an installed package)."""
    parent = Path(__file__).resolve().parents[1]
    if (parent / "pyproject.toml").is_file() and (parent / "cagnet").is_dir():
        return parent
    return Path.cwd()


def read_text(path: str | os.PathLike, what: str, error: type[CagnetError] = CagnetError) -> str:
    """The UTF-8 text of ``path``; ``error("<path>: <what> not found")`` or
    ``error("<path>: cannot read <what> (<reason>)")`` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read {what} ({err})") from None


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _RecordingWriter:
    """A binary stream that keeps the first ``OSError`` of its ``write``: ``torch.save``
    reports a failed write as a ``RuntimeError`` of its own ("unexpected pos ..."), which
    would hide that the disk is full."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.stream.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def named_os_error(err: OSError, path: str | os.PathLike) -> OSError:
    """``err`` as an OSError of the same kind (errno) whose file name is ``path``: a failed
    ``write`` or ``flush`` does not say which file it was writing."""
    return OSError(err.errno, err.strerror or str(err), os.fspath(path))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(stream)`` on a temporary file next to ``path``, flush it to disk, then
    rename it to ``path`` (creating the folder). On any failure the temporary file is removed
    and ``path`` is left as it was; an OS error (also one that ``write`` reported in its own
    exception type, as ``torch.save`` does) is raised as an ``OSError`` naming ``path``.
    Returns ``path``."""
    path = Path(path)
    tmp = None
    recorder = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes the file private; outputs get the usual mode
        with os.fdopen(handle, "wb") as stream:
            recorder = _RecordingWriter(stream)
            write(recorder)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        recorded = recorder.error if recorder is not None else None
        if isinstance(err, OSError):
            raise named_os_error(err, path) from None
        if recorded is not None:
            raise named_os_error(recorded, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def refuse_existing(paths: Iterable[str | os.PathLike], force: bool, error: type[CagnetError] = CagnetError) -> None:
    """Raise ``error`` naming the first of ``paths`` that exists, unless ``force``."""
    if force:
        return
    for path in paths:
        if Path(path).exists():
            raise error(f"{path}: exists; pass --force to replace it")


def os_error_message(err: OSError) -> str:
    """One line for an OS error: ``<path>: <reason>`` (``<path>`` and ``<other path>`` for a
    rename), e.g. ``runs/x/checkpoint.pt: No space left on device``."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    names = f"{os.fsdecode(err.filename)}" + (f" -> {os.fsdecode(err.filename2)}" if err.filename2 else "")
    return f"{names}: {reason}"
