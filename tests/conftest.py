"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def original_reference_path() -> Path | None:
    """Folder with the original implementation's facts and reference outputs, or None.

    ``$CAGNET_ORIGINAL_REFERENCE`` when set, else ``<repo>/../shared/original_cagnet``.
    """
    env = os.environ.get("CAGNET_ORIGINAL_REFERENCE")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "original_cagnet"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def original_reference_dir() -> Path:
    path = original_reference_path()
    if path is None:
        pytest.skip("original CaGNet reference folder not found "
                    "(set CAGNET_ORIGINAL_REFERENCE or place it at ../shared/original_cagnet)")
    return path
