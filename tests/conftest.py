"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def original_reference_path(variable: str = "CAGNET_ORIGINAL_REFERENCE",
                            folder: str = "original_cagnet") -> Path | None:
    """Folder with the original implementation's facts and reference outputs, or None.

    ``$<variable>`` when set, else ``<repo>/../shared/<folder>`` (CaGNetv2's:
    ``CAGNET_ORIGINAL_V2_REFERENCE``, ``original_cagnetv2``).
    """
    env = os.environ.get(variable)
    path = Path(env) if env else REPO_ROOT.parent / "shared" / folder
    return path if path.is_dir() else None


#: (environment variable, folder under ../shared, what it is) of each reference folder.
REFERENCE_FOLDERS = {"v1": ("CAGNET_ORIGINAL_REFERENCE", "original_cagnet", "original CaGNet"),
                     "v2": ("CAGNET_ORIGINAL_V2_REFERENCE", "original_cagnetv2", "original CaGNetv2")}


def require_reference(which: str = "v1", file: str | None = None) -> Path:
    """The reference folder ``which`` (``v1`` / ``v2``, see :data:`REFERENCE_FOLDERS`), or skip the
    test saying what is missing (the folder, or ``file`` inside it)."""
    variable, folder, what = REFERENCE_FOLDERS[which]
    path = original_reference_path(variable, folder)
    if path is None:
        pytest.skip(f"{what} reference folder not found (set {variable} or place it at ../shared/{folder})")
    if file is not None and not (path / file).is_file():
        pytest.skip(f"{path} has no {file}")
    return path


@pytest.fixture(scope="session")
def original_reference_dir() -> Path:
    return require_reference("v1")


@pytest.fixture(scope="session")
def original_v2_reference_dir() -> Path:
    return require_reference("v2")


# ---------------------------------------------------------------------------------------------
# training / evaluation tests (tests/test_train_*.py, test_evaluate.py, test_cli.py)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_train_benchmark(tmp_path_factory) -> Path:
    """A tiny embedded benchmark (16 train / 8 validation / 8 test images of 64 px) for training tests."""
    from cagnet.data.synthetic import SyntheticConfig, build_synthetic_benchmark

    root = tmp_path_factory.mktemp("tiny_benchmark") / "synthetic"
    return build_synthetic_benchmark(root, SyntheticConfig(seed=3, num_train=16, num_test=8, num_validation=8, image_size=64),
                                     progress=False)


@pytest.fixture(scope="session")
def tiny_pretrain_overrides(tmp_path_factory) -> list[str]:
    """``--set`` overrides that shrink the ``tutorial`` config's backbone pretraining to a second
    (3 iterations on 4 scenes of 48 px), cached in a folder of this test session: step 1 still
    starts from a pretrained backbone through the real path, without the tutorial's minutes."""
    cache = tmp_path_factory.mktemp("pretrained")
    return ["pretrain.iterations=3", "pretrain.num_images=4", "pretrain.image_size=48", "pretrain.batch_size=2",
            f"pretrain.cache_dir={cache}"]


@pytest.fixture(scope="session")
def tiny_train_overrides(tiny_train_benchmark, tiny_pretrain_overrides) -> list[str]:
    """``--set`` overrides that shrink the ``tutorial`` config to seconds on the tiny benchmark:
    48 px crops, batches of 4, 64 px test images, one CPU thread, no periodic outputs, a tiny
    pretrained backbone (:func:`tiny_pretrain_overrides`)."""
    return [f"data.root={tiny_train_benchmark}", "data.synthetic=null", "data.crop_size=48",
            "data.batch_size=4", "data.test_size=64", "data.test_batch_size=4", "runtime.device=cpu",
            "runtime.num_threads=1", "runtime.eval_interval=0", "runtime.checkpoint_interval=0",
            "runtime.sample_images=2", "runtime.progress=false", *tiny_pretrain_overrides]


@pytest.fixture()
def single_torch_thread():
    """Run a test with one torch CPU thread (restored afterwards): on a shared 2-core machine,
    two threads competing with another process slow convolutions down by an order of magnitude."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def cli_error(capsys):
    """``cli_error(argv)`` runs ``python -m cagnet ARGV`` in-process, checks that it failed with
    exit code 2 and one line ``error: ...`` on stderr (no traceback), and returns that line."""
    from cagnet.cli import main

    def run(argv: list[str]) -> str:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        return err

    return run


# ---------------------------------------------------------------------------------------------
# figures (tests/test_viz.py, test_widgets.py)
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def assert_fits_in_figure():
    """``assert_fits_in_figure(figure)`` draws a matplotlib figure with the Agg renderer and
    checks that its legends, axes titles, figure texts (suptitle) and axes lie inside the figure (nothing cut
    at an edge when it is saved as a PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def check(figure) -> None:
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        bounds = figure.bbox
        parts = [(f"legend {k}", legend) for k, legend in enumerate(figure.legends)]
        parts += [(f"title {ax.get_title()!r}", ax.title) for ax in figure.axes if ax.get_title()]
        parts += [(f"axes {k}", ax) for k, ax in enumerate(figure.axes)]
        parts += [(f"text {text.get_text()!r}", text) for text in figure.texts]  # suptitle
        assert figure.legends or any(ax.get_title() for ax in figure.axes)  # something was checked
        for name, artist in parts:
            box = artist.get_window_extent(renderer)
            assert box.width > 0 and box.height > 0, f"{name} has no extent"
            assert (box.x0 >= bounds.x0 and box.y0 >= bounds.y0 and box.x1 <= bounds.x1
                    and box.y1 <= bounds.y1), f"{name} at {box.bounds} leaves the figure {bounds.bounds}"

    return check


# ---------------------------------------------------------------------------------------------
# a dataset with its own classes (tests/test_embed.py, test_custom_dataset.py, test_predict.py)
# ---------------------------------------------------------------------------------------------
CUSTOM_CLASSES = ["sky", "grass", "potted plant", "road", "water"]
CUSTOM_SEEN, CUSTOM_UNSEEN = [0, 1, 3], [2, 4]   # potted plant and water are unseen
#: (height, width) of the images of each folder: odd, non-square sizes
CUSTOM_SIZES = {"train": [(97, 143), (120, 200), (81, 64), (143, 97)], "val": [(120, 200), (97, 143), (66, 90)]}


def write_custom_dataset(root: Path, seed: int = 0) -> Path:
    """A dataset folder in the original layout with its own class names and no word vectors yet:
    sky above grass, road and water at the bottom, a round potted plant somewhere; images of
    odd sizes, PNG and JPEG. Returns ``root``."""
    import numpy as np
    from PIL import Image

    colours = np.array([[110, 160, 230], [60, 150, 50], [150, 90, 60], [90, 90, 90], [30, 60, 160]])
    rng = np.random.default_rng(seed)
    for folder, shapes in CUSTOM_SIZES.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for index, (height, width) in enumerate(shapes):
            yy, xx = np.mgrid[:height, :width]
            label = np.zeros((height, width), np.uint8)
            label[yy > 0.4 * height] = 1
            label[(yy > 0.6 * height) & (xx < 0.5 * width)] = 3
            label[(yy > 0.6 * height) & (xx >= 0.5 * width)] = 4
            cy, cx = rng.integers(height // 4, 3 * height // 4), rng.integers(width // 4, 3 * width // 4)
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) // 6) ** 2] = 2
            label[0, :3] = 255   # a few unlabelled pixels
            image = np.clip(colours[np.minimum(label, 4)] + rng.normal(0, 12, (height, width, 3)), 0, 255)
            suffix = "jpg" if index % 2 else "png"
            Image.fromarray(image.astype(np.uint8)).save(root / "images" / folder / f"scene{index}.{suffix}")
            Image.fromarray(label).save(root / "annotations" / folder / f"scene{index}.png")
    (root / "labels_refined.txt").write_text("".join(f"{i}\t{name}\n" for i, name in enumerate(CUSTOM_CLASSES)))
    (root / "split").mkdir()
    np.save(root / "split" / "seen_cls.npy", np.array(CUSTOM_SEEN))
    np.save(root / "split" / "novel_cls.npy", np.array(CUSTOM_UNSEEN))
    return root


@pytest.fixture()
def custom_dataset(tmp_path) -> Path:
    """A fresh :func:`write_custom_dataset` folder (without word vectors) for one test."""
    return write_custom_dataset(tmp_path / "my_dataset")


def custom_train_overrides(root: Path, pretrain_overrides: list[str]) -> list[str]:
    """``--set`` overrides that point the ``tutorial`` config at a custom dataset and shrink it
    to seconds (crops larger than some images, batches of 2, one CPU thread, the given tiny
    pretraining)."""
    return [f"data.root={root}", "data.crop_size=112", "data.batch_size=2", "data.test_size=96",
            "data.test_batch_size=2", "runtime.device=cpu", "runtime.num_threads=1", "runtime.eval_interval=0",
            "runtime.checkpoint_interval=0", "runtime.sample_images=2", "runtime.progress=false",
            *pretrain_overrides]


@pytest.fixture()
def custom_overrides(custom_dataset, tiny_pretrain_overrides) -> list[str]:
    """:func:`custom_train_overrides` of the :func:`custom_dataset` folder."""
    return custom_train_overrides(custom_dataset, tiny_pretrain_overrides)


# ---------------------------------------------------------------------------------------------
# a small file system: a real full disk (tests/test_run_folders.py)
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def small_filesystem(tmp_path):
    """A 1 MiB tmpfs mounted at a fresh folder for one test (a full disk for real); skips where
    mounting is not allowed (not root, or a container without the capability)."""
    import subprocess

    mount_point = tmp_path / "small_fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
