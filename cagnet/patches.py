"""CaGNetv2's bank of label blocks (``python -m cagnet patches``): the label-block PixelCNN trained
on a config's training labels, then sampled with the original's rules into the bank that
patch-wise step 2 tiles (``schedules.<mixed|st_mixed>.block_source: bank``).

::

    training crops (the step-2 schedule's crop, drawn as training draws them; unseen classes ignored)
      -> labels nearest-resized to its feature grid, as step 1 resizes them     [N, h, w]
      -> non-overlapping s x s blocks, blocks without a labelled pixel dropped  [M, s, s]
      -> input: holes filled from a neighbour (fill_block_holes); target: holes ignored
    PixelCNN(input, condition) -> logits [M, S+U, s, s]; cross-entropy; Adam; the blocks of
      ``batch_size`` label maps per batch
    sampling: u ~ uniform unseen class per block; condition u; first ``first_unseen`` raster
      positions = u; each later position drawn from the logits (p_base, top-k, softmax again);
      kept when >= ``threshold`` unseen pixels and <= ``cc_max`` classes; with probability
      ``pure_iteration_share`` an iteration emits uniform blocks of the step-2 prior instead

**The condition.** The original trains with the embedding of each position's own label as that
position's condition, which hands every position its answer (the masks hide it from the input
only) and differs from what sampling gives (the unseen class u on every position). Here the
training condition is, by default (``condition: block_class``), one class per block on every
position: the block's most frequent labelled class (:func:`cagnet.models.block_condition_classes`).
It is the form sampling gives (u is the most frequent class of a sampled block: it holds the
first 5 of 9 positions), and it does not tell a position its label: it is the same vector at
all positions, so what it says about the label at (r, c) it says about every other position,
and changing that label leaves it unchanged unless the change moves the block's majority.
``condition: leaking`` trains in the original's form (for the ablation). The condition weights
are initialised (the original leaves them as uninitialised memory).

**The second softmax.** The original applies a softmax to the top-k probabilities again before
the draw, which flattens them (their weights then lie within a factor e of each other). Its
defect list does not count this as a defect, and it is what makes unseen classes appear after
the first positions at all: the PixelCNN never sees an unseen label as a target, so its own
probabilities for them are near zero, and with ``p_base`` 0 (the VOC command) almost no block
would reach the unseen-pixel threshold. ``second_softmax: true`` (default) keeps it;
``false`` renormalises the top-k probabilities by their sum (then ``p_base`` decides the unseen share).

**Caching.** The bank is written to ``<cache_dir>/label_blocks_<dataset>_s<s>_<digest>.pt`` with
a JSON of statistics (:func:`recipe`, class shares, classes and unseen pixels per block, the
PixelCNN's loss curve, seconds), a figure of sampled blocks (``.png``) and the PixelCNN's weights
(``_pixelcnn.pt``) beside it; the digest covers everything that decides the bank (dataset, classes
and their embeddings, patch size, grid and crop, the ``patches`` section, seed). A finished bank
(its JSON with the same recipe) is reused; ``force`` rebuilds it. Every file is written atomically
and the JSON last, so an interrupted build (Ctrl-C) leaves either the previous complete result
or files that are not reused.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cagnet.config import PatchesConfig, TrainConfig
from cagnet.config_io import to_dict
from cagnet.data.blocks import cut_blocks, fill_block_holes, load_label_blocks, save_label_blocks
from cagnet.data.datasets import DatasetInfo, annotation_path, read_annotation
from cagnet.data.transforms import IGNORE_INDEX
from cagnet.errors import ConfigError, DatasetError
from cagnet.files import atomic_write, atomic_write_text, refuse_existing
from cagnet.models import LabelBlockPixelCNN, block_condition_classes
from cagnet.runtime import torch_threads
from cagnet.train.batches import mix_seed
from cagnet.train.loading import build_model, class_embedding_table, prepare_dataset, training_dataset
from cagnet.train.steps import check_patch_grid, grid_labels, unseen_prior

#: Version of the bank recipe's code; part of the cache digest.
FORMAT_VERSION = 1
#: Blocks drawn in the figure beside a bank.
FIGURE_BLOCKS = 96


@dataclass
class BankResult:
    """What :func:`make_bank` returns: ``path`` of the bank, ``info`` (its JSON: recipe and
    statistics) and ``reused`` (True when a finished bank was used as it was)."""

    path: Path
    info: dict[str, Any]
    reused: bool = False


@dataclass
class BankSetup:
    """What a bank is made for: the config's ``patches`` section, the dataset's classes and embedding
    table [S+U, E], the patch size, the step-2 schedule's crop, its feature grid (h, w) and the
    ``gen_unseen_rate`` of the pure blocks' prior."""

    settings: PatchesConfig
    info: DatasetInfo
    embeddings: torch.Tensor
    patch_size: int
    crop_size: int
    grid: tuple[int, int]
    gen_unseen_rate: float

    @property
    def num_seen(self) -> int:
        return self.info.num_seen

    @property
    def num_classes(self) -> int:
        return self.info.num_seen + self.info.num_unseen


def prepare_bank(config: TrainConfig, progress: bool = False) -> BankSetup:
    """Check ``config`` for a bank and read what it is made for; one-line ConfigError otherwise."""
    settings = config.patches
    if settings is None:
        raise ConfigError(f"config {config.name!r} has no patches section (the label-block PixelCNN and the "
                          "sampling rules of the bank; see the *_pa3 configs)")
    patch_size = config.model.patch_size
    if patch_size < 2:
        raise ConfigError(f"patches: model.patch_size is {patch_size}; the bank of label blocks is for patch-wise "
                          "step 2 (model.patch_size: 3)")
    area = patch_size * patch_size
    for key in ("first_unseen", "threshold"):
        if getattr(settings, key) > area:
            raise ConfigError(f"patches.{key}: {getattr(settings, key)} exceeds the {area} positions of a "
                              f"{patch_size}x{patch_size} block")
    section = config.schedule(settings.schedule)
    info = prepare_dataset(config, progress=progress)
    if info.num_unseen == 0:
        raise DatasetError(f"{info.root}: no unseen class (split/novel_cls.npy): a bank of unseen-class blocks "
                           "needs one")
    crop = section.crop_size or config.data.crop_size
    crop_key = f"schedules.{settings.schedule}.crop_size" if section.crop_size else "data.crop_size"
    # the grid only needs the backbone's shapes: built on the meta device, no memory
    with torch.device("meta"):
        model = build_model(config, info)
    grid = check_patch_grid(model, crop, crop_key)
    rate = section.gen_unseen_rate if settings.gen_unseen_rate is None else settings.gen_unseen_rate
    return BankSetup(settings=settings, info=info, embeddings=class_embedding_table(config, info),
                     patch_size=patch_size, crop_size=crop, grid=tuple(grid), gen_unseen_rate=float(rate))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_identity(config: TrainConfig, info: DatasetInfo) -> dict[str, Any]:
    """What identifies the training data: the embedded benchmark's content hash, or the folder of
    another dataset; the training image ids (``data.train_limit`` applied) either way."""
    from cagnet.data.synthetic import read_benchmark_metadata

    metadata = read_benchmark_metadata(info.root) or {}
    ids = training_dataset(config, info, config.data.crop_size).ids
    where = ({"benchmark_sha256": metadata["content_sha256"]} if "content_sha256" in metadata
             else {"root": str(Path(info.root).resolve())})
    return {**where, "train_ids_sha256": _sha256("\n".join(ids).encode())}


def recipe(config: TrainConfig, setup: BankSetup) -> dict[str, Any]:
    """Everything that decides the bank, as plain data."""
    settings = to_dict(setup.settings)
    settings.pop("cache_dir")
    settings["gen_unseen_rate"] = setup.gen_unseen_rate
    return {"format": FORMAT_VERSION, "patches": settings, "dataset": dataset_identity(config, setup.info),
            "classes": setup.info.eval_class_names, "num_seen": setup.num_seen,
            "embedding": config.data.embedding, "normalize_embeddings": config.data.normalize_embeddings,
            "embeddings_sha256": _sha256(setup.embeddings.float().numpy().tobytes()),
            "patch_size": setup.patch_size, "crop_size": setup.crop_size, "grid": list(setup.grid),
            "scale_range": list(config.data.scale_range), "flip": config.data.flip}


def default_cache_dir() -> Path:
    """``data/label_blocks`` of the project (beside the embedded benchmark)."""
    from cagnet.files import project_root

    return project_root() / "data" / "label_blocks"


def cached_bank_path(config: TrainConfig, setup: BankSetup | None = None) -> Path:
    """The cache file of ``config``'s bank (which may not exist yet)."""
    setup = setup or prepare_bank(config)
    return _cache_path(setup, recipe(config, setup))


def companion_paths(path: Path) -> dict[str, Path]:
    """The files written beside a bank: its statistics, its figure, the PixelCNN's weights."""
    return {"info": path.with_suffix(".json"), "figure": path.with_suffix(".png"),
            "pixelcnn": path.with_name(f"{path.stem}_pixelcnn.pt")}


# ----------------------------------------------------------------------------- training data
def training_label_grids(config: TrainConfig, setup: BankSetup, progress: bool = False) -> torch.Tensor:
    """Training labels on the step-2 feature grid, ``[N * crops_per_image, h, w]`` long.

    Each crop is drawn as training draws it (:class:`~cagnet.data.transforms.TrainTransform`:
    scale, crop, flip) from a seed of (``patches.seed``, image, crop), then nearest-resized to
    the grid (:func:`cagnet.train.steps.grid_labels`). Only the annotations are read.
    """
    from tqdm.auto import tqdm

    dataset = training_dataset(config, setup.info, setup.crop_size)
    transform, count = dataset.transform, setup.settings.crops_per_image
    grids = []
    for index, (folder, image_id) in enumerate(tqdm(dataset.entries, desc="label maps", unit="map",
                                                      disable=not progress)):
        label = torch.from_numpy(dataset.lut[read_annotation(annotation_path(dataset.root, folder, image_id),
                                                            setup.info.num_labels)]).long()
        crops = []
        for crop in range(count):
            rng = torch.Generator().manual_seed(mix_seed(setup.settings.seed, index, crop))
            crops.append(transform.apply_label(label, transform.draw(*label.shape, rng=rng)))
        grids.append(grid_labels(torch.stack(crops), [setup.grid])[0])
    if not grids:
        raise DatasetError(f"{setup.info.root}: the training split has no image")
    return torch.cat(grids)


def training_condition(inputs: torch.Tensor, targets: torch.Tensor, form: str, num_classes: int) -> torch.Tensor:
    """The PixelCNN's training condition of blocks: ``block_class`` = one class per block ``[B]``
    (the most frequent labelled class of ``targets``, holes ignored), ``leaking`` = each
    position's own label ``[B, s, s]`` (``inputs``, holes filled: the original's form)."""
    if form == "leaking":
        return inputs
    if form != "block_class":
        raise ConfigError(f"patches.condition: expected 'block_class' or 'leaking', got {form!r}")
    return block_condition_classes(targets, num_classes)


def _training_blocks(labels: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(inputs [N, nb, s, s], targets [N, nb, s, s], usable [N, nb] bool, blocks dropped because a
    hole stayed open) of label maps [N, h, w]: usable blocks have a labelled pixel and no open hole."""
    n = labels.shape[0]
    blocks = cut_blocks(labels, patch_size, drop_unlabelled=False)               # [N * nb, s, s]
    filled, still_open = fill_block_holes(blocks)
    labelled = (blocks != IGNORE_INDEX).flatten(1).any(1)
    closed = ~still_open.flatten(1).any(1)
    usable = labelled & closed
    shape = (n, -1, patch_size, patch_size)
    return (torch.where(usable[:, None, None], filled, 0).view(shape), blocks.view(shape), usable.view(n, -1),
            int((labelled & ~closed).sum()))


def train_pixelcnn(model: LabelBlockPixelCNN, labels: torch.Tensor, setup: BankSetup, device: torch.device,
                   progress: bool = False) -> dict[str, Any]:
    """Train ``model`` (on ``device``) on the blocks of label maps [N, h, w]; returns the training
    statistics (blocks, dropped blocks, iterations, loss curve)."""
    from tqdm.auto import tqdm

    settings = setup.settings
    inputs, targets, usable, dropped = _training_blocks(labels, setup.patch_size)
    if not bool(usable.any()):
        raise DatasetError(f"{setup.info.root}: no training label block with a labelled seen-class pixel")
    # uint8 on the device (labels and 255 fit: the training LUT is uint8), long per batch
    inputs, targets = inputs.to(device=device, dtype=torch.uint8), targets.to(device=device, dtype=torch.uint8)
    usable = usable.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order_rng = torch.Generator().manual_seed(mix_seed(settings.seed, 2))
    batches = math.ceil(labels.shape[0] / settings.batch_size)
    losses: list[torch.Tensor] = []
    model.train()
    bar = tqdm(total=settings.epochs * batches, desc="label-block PixelCNN", unit="it", disable=not progress)
    for _ in range(settings.epochs):
        order = torch.randperm(labels.shape[0], generator=order_rng).to(device)
        for start in range(0, labels.shape[0], settings.batch_size):
            maps = order[start:start + settings.batch_size]
            keep = usable[maps]
            x, y = inputs[maps][keep].long(), targets[maps][keep].long()
            if x.shape[0] == 0:   # label maps without a usable block
                bar.update()
                continue
            logits = model(x, training_condition(x, y, settings.condition, setup.num_classes))
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            bar.update()
            if progress and len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    values = torch.stack(losses).float().cpu().numpy() if losses else np.zeros(0)
    # about 100 points: the mean loss of each stretch of iterations, at its last iteration
    stride = max(1, len(values) // 100)
    curve = [[min(i + stride, len(values)), float(values[i:i + stride].mean())] for i in range(0, len(values), stride)]
    return {"training_blocks": int(usable.sum()), "dropped_open_holes": dropped, "label_maps": labels.shape[0],
            "iterations": len(values), "loss_curve": curve, "final_loss": curve[-1][1] if curve else None}


# ----------------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_pixelcnn_blocks(model: LabelBlockPixelCNN, condition: torch.Tensor, patch_size: int,
                           settings: PatchesConfig, num_seen: int, generator: torch.Generator) -> torch.Tensor:
    """Blocks ``[N, s, s]`` (long) drawn from ``model`` (eval mode) for condition classes ``[N]``:
    the first ``first_unseen`` raster positions are the condition class, each later one is drawn
    from its logits given the positions before it (p_base, top-k, second softmax: the module
    docstring), on the device of ``condition``, from ``generator``."""
    count, num_labels = condition.shape[0], model.num_labels
    blocks = condition[:, None, None].expand(count, patch_size, patch_size).clone()
    # positions not drawn yet hold the condition class: the masks keep them out of earlier logits
    keep = max(1, math.ceil(settings.topk * num_labels - 1e-9))
    for position in range(settings.first_unseen, patch_size * patch_size):
        row, col = divmod(position, patch_size)
        probabilities = model(blocks, condition)[:, :, row, col].float().softmax(1)      # [N, K]
        probabilities[:, num_seen:] += settings.p_base / num_labels
        top = probabilities.topk(keep, dim=1)
        weights = top.values.softmax(1) if settings.second_softmax else top.values      # multinomial normalises
        drawn = torch.multinomial(weights, 1, generator=generator)
        blocks[:, row, col] = top.indices.gather(1, drawn)[:, 0]
    return blocks


def block_rules(blocks: torch.Tensor, settings: PatchesConfig, num_seen: int, num_classes: int) -> torch.Tensor:
    """Which blocks ``[N, s, s]`` the sampler keeps, ``[N]`` bool: at least ``threshold`` unseen
    pixels and at most ``cc_max`` distinct classes."""
    flat = blocks.flatten(1).long()
    unseen = (flat >= num_seen).sum(1)
    classes = F.one_hot(flat, num_classes).amax(1).sum(1)
    return (unseen >= settings.threshold) & (classes <= settings.cc_max)


def sample_bank(model: LabelBlockPixelCNN, setup: BankSetup, device: torch.device, progress: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``num_blocks`` blocks by the sampling rules (module docstring), shuffled:
    (bank [num_blocks, s, s] long, from a pure iteration [num_blocks] bool, both on the CPU;
    sampling statistics). A ConfigError when ``max_iterations`` do not fill the bank."""
    from tqdm.auto import tqdm

    settings, s = setup.settings, setup.patch_size
    generator = torch.Generator(device=device).manual_seed(mix_seed(settings.seed, 3))
    prior = unseen_prior(setup.num_seen, setup.num_classes - setup.num_seen, setup.gen_unseen_rate)
    prior = prior.to(device=device, dtype=torch.float32)
    unseen = torch.arange(setup.num_seen, setup.num_classes, device=device)
    model.eval()
    parts, pure_parts = [], []
    kept = drawn = pixelcnn_kept = iterations = pure_iterations = 0
    bar = tqdm(total=settings.num_blocks, desc="sampling label blocks", unit="block", disable=not progress)
    while kept < settings.num_blocks:
        if iterations == settings.max_iterations:
            bar.close()
            raise ConfigError(f"patches.max_iterations: {iterations} sampling iterations kept {kept} of the "
                              f"{settings.num_blocks} blocks of patches.num_blocks ({pixelcnn_kept} of {drawn} "
                              "PixelCNN blocks passed patches.threshold and cc_max); raise it, lower the "
                              "threshold or raise patches.p_base")
        iterations += 1
        count = settings.blocks_per_iteration
        pure = bool(torch.rand((), device=device, generator=generator) < settings.pure_iteration_share)
        if pure:   # uniform blocks, one class each from the step-2 prior; the rules do not apply
            pure_iterations += 1
            blocks = torch.multinomial(prior, count, replacement=True, generator=generator)
            blocks = blocks[:, None, None].expand(count, s, s).clone()
        else:
            condition = unseen[torch.randint(len(unseen), (count,), device=device, generator=generator)]
            blocks = sample_pixelcnn_blocks(model, condition, s, settings, setup.num_seen, generator)
            drawn += count
            blocks = blocks[block_rules(blocks, settings, setup.num_seen, setup.num_classes)]
            pixelcnn_kept += blocks.shape[0]
        parts.append(blocks)
        pure_parts.append(torch.full((blocks.shape[0],), pure, dtype=torch.bool, device=device))
        bar.update(min(blocks.shape[0], settings.num_blocks - kept))
        kept += blocks.shape[0]
    bar.close()
    order = torch.randperm(kept, device=device, generator=generator)[:settings.num_blocks]
    bank, from_pure = torch.cat(parts)[order].cpu(), torch.cat(pure_parts)[order].cpu()
    return bank, from_pure, {"iterations": iterations, "pure_iterations": pure_iterations,
                             "pixelcnn_blocks_drawn": drawn, "pixelcnn_blocks_kept": pixelcnn_kept,
                             "acceptance": pixelcnn_kept / drawn if drawn else None}


def bank_statistics(bank: torch.Tensor, from_pure: torch.Tensor, class_names: list[str], num_seen: int
                    ) -> dict[str, Any]:
    """Class pixel shares, histograms of classes and of unseen pixels per block, pure blocks."""
    area = bank.shape[-1] * bank.shape[-2]
    flat = bank.flatten(1).long()
    pixels = torch.bincount(flat.flatten(), minlength=len(class_names)).double()
    classes = F.one_hot(flat, len(class_names)).amax(1).sum(1)
    unseen = (flat >= num_seen).sum(1)
    return {"num_blocks": int(bank.shape[0]), "patch_size": int(bank.shape[-1]),
            "class_shares": {name: float(share) for name, share in zip(class_names, pixels / pixels.sum())},
            "unseen_pixel_share": float((flat >= num_seen).double().mean()),
            "classes_per_block": {str(k): int(v) for k, v in
                                  enumerate(torch.bincount(classes, minlength=area + 1).tolist()) if k},
            "unseen_pixels_per_block": {str(k): int(v) for k, v in
                                        enumerate(torch.bincount(unseen, minlength=area + 1).tolist())},
            "pure_iteration_blocks": int(from_pure.sum()), "uniform_blocks": int((classes == 1).sum())}


# ----------------------------------------------------------------------------- the bank
def build_bank(config: TrainConfig, path: str | Path | None = None, *, setup: BankSetup | None = None,
               device: torch.device | str | None = None, progress: bool = True) -> BankResult:
    """Train the PixelCNN, sample the bank and write it to ``path`` (default: the cache file)
    with its companions (:func:`companion_paths`); deterministic for a config on the same device
    and thread count. The caller's random streams are left as they were."""
    from cagnet.train.distributed import resolve_device
    from cagnet.viz.blocks import plot_label_blocks

    setup = setup or prepare_bank(config, progress=progress)
    settings, the_recipe = setup.settings, recipe(config, setup)
    path = Path(path) if path is not None else _cache_path(setup, the_recipe)
    device = resolve_device(config.runtime.device) if device is None else torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    started = time.perf_counter()
    # the PixelCNN's initialisation (CPU) and dropout (its device) draw from seeded copies of the
    # global streams; exactly those are seeded, and restored afterwards
    with torch_threads(config.runtime.num_threads), torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(mix_seed(settings.seed, 1))
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(mix_seed(settings.seed, 1))
        labels = training_label_grids(config, setup, progress)
        model = LabelBlockPixelCNN(setup.num_classes, setup.embeddings.shape[1], width=settings.width,
                                   num_layers=settings.num_layers, kernel_size=settings.kernel_size,
                                   dropout=settings.dropout, condition_init=settings.condition_init)
        model.set_class_embeddings(setup.embeddings)
        model.to(device)
        read = time.perf_counter()
        training = train_pixelcnn(model, labels, setup, device, progress)
        trained = time.perf_counter()
        bank, from_pure, sampling = sample_bank(model, setup, device, progress)
    done = time.perf_counter()
    info = {"recipe": the_recipe,
            "statistics": bank_statistics(bank, from_pure, setup.info.eval_class_names, setup.num_seen),
            "pixelcnn": training, "sampling": sampling, "device": str(device),
            "seconds": {"label_maps": read - started, "training": trained - read, "sampling": done - trained,
                        "total": done - started}}
    figure = plot_label_blocks(bank[:FIGURE_BLOCKS], setup.info.eval_class_names, setup.num_seen,
                               title=f"{min(FIGURE_BLOCKS, bank.shape[0])} of the {bank.shape[0]} blocks of the bank")
    _write_outputs(path, bank, model, figure, info, setup.num_classes)
    return BankResult(path=path, info=info)


def _write_outputs(path: Path, bank: torch.Tensor, model: LabelBlockPixelCNN, figure, info: dict, num_classes: int
                   ) -> None:
    """The bank and its companions, each atomically, the JSON (what marks a bank finished) last."""
    files = companion_paths(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files["info"].unlink(missing_ok=True)   # from here until the end, no earlier result counts as finished
    save_label_blocks(path, bank, num_classes)   # atomic
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_write(files["pixelcnn"], lambda stream: torch.save(state, stream))
    atomic_write(files["figure"], lambda stream: figure.savefig(stream, format="png", dpi=100))
    atomic_write_text(files["info"], json.dumps(info, indent=1) + "\n")


def _cache_path(setup: BankSetup, the_recipe: dict[str, Any]) -> Path:
    digest = _sha256(json.dumps(the_recipe, sort_keys=True).encode())[:12]
    folder = Path(setup.settings.cache_dir).expanduser() if setup.settings.cache_dir else default_cache_dir()
    return folder / f"label_blocks_{setup.info.name}_s{setup.patch_size}_{digest}.pt"


def _finished(path: Path, the_recipe: dict[str, Any], setup: BankSetup) -> BankResult | None:
    """The bank at ``path`` when its JSON has ``the_recipe``, checked (a damaged bank file is a
    DatasetError naming it); None when there is no finished bank of that recipe there."""
    try:
        info = json.loads(companion_paths(path)["info"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("recipe") != the_recipe or not path.is_file():
        return None
    try:
        blocks = load_label_blocks(path, setup.num_classes, setup.patch_size)
    except DatasetError as err:
        raise DatasetError(f"{err} (--force makes it again)") from None
    expected = info.get("statistics", {}).get("num_blocks")
    if blocks.shape[0] != expected:
        raise DatasetError(f"{path}: {blocks.shape[0]} label blocks, but {companion_paths(path)['info'].name} "
                           f"says {expected} (--force makes it again)")
    return BankResult(path=path, info=info, reused=True)


def make_bank(config: TrainConfig, out: str | Path | None = None, *, force: bool = False,
              device: torch.device | str | None = None, progress: bool = True) -> BankResult:
    """The bank of ``config``: a finished one of the same recipe at ``out`` (default: the cache
    file, :func:`cached_bank_path`) is reused, unless ``force``; otherwise it is made now. An
    ``out`` that holds something else is replaced only with ``force``."""
    setup = prepare_bank(config, progress=progress)
    the_recipe = recipe(config, setup)
    path = Path(out) if out is not None else _cache_path(setup, the_recipe)
    if path.suffix not in (".pt", ".npy"):
        raise ConfigError(f"--out {path}: a bank of label blocks is a .pt or .npy file")
    if not force:
        finished = _finished(path, the_recipe, setup)
        if finished is not None:
            return finished
        if out is not None:
            refuse_existing([path], force, ConfigError)
    return build_bank(config, path, setup=setup, device=device, progress=progress)


def ensure_bank(config: TrainConfig, force: bool = False, progress: bool = True) -> Path:
    """The path of ``config``'s cached bank, made first when it is missing (or with ``force``)."""
    return make_bank(config, force=force, progress=progress).path


def describe(result: BankResult) -> list[str]:
    """One line per result: the bank, its blocks, the PixelCNN's training, the sampling, the files."""
    info, stats = result.info, result.info["statistics"]
    sampling, training, files = info["sampling"], info["pixelcnn"], companion_paths(result.path)
    origin = "cached" if result.reused else f"made in {info['seconds']['total']:.1f} s on {info['device']}"
    unseen = sum(int(k) * v for k, v in stats["unseen_pixels_per_block"].items()) / stats["num_blocks"]
    curve = training["loss_curve"]
    acceptance = "" if sampling["acceptance"] is None else f" ({sampling['acceptance']:.1%})"
    return [f"bank: {result.path} ({origin})",
            f"blocks: {stats['num_blocks']} of {stats['patch_size']}x{stats['patch_size']}; "
            f"{stats['pure_iteration_blocks']} from pure iterations; unseen pixels per block {unseen:.2f}; "
            f"classes per block { {k: v for k, v in stats['classes_per_block'].items() if v} }",
            f"pixelcnn: {training['training_blocks']} training blocks of {training['label_maps']} label maps, "
            f"{training['iterations']} iterations, loss {curve[0][1]:.3f} -> {curve[-1][1]:.3f}"
            if curve else "pixelcnn: no training iteration",
            f"sampling: {sampling['iterations']} iterations ({sampling['pure_iterations']} pure), "
            f"{sampling['pixelcnn_blocks_kept']} of {sampling['pixelcnn_blocks_drawn']} PixelCNN blocks kept"
            f"{acceptance}",
            f"statistics: {files['info']}; figure: {files['figure']}; pixelcnn weights: {files['pixelcnn']}"]
