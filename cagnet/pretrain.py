"""Backbone pretraining on generated textures: the embedded benchmark's stand-in for ImageNet.

The original CaGNet, and every method its paper compares, starts from DeepLabV2 weights
pretrained on ImageNet (``--init-model deeplabv2_resnet101_init.pth``). The tutorial cannot
download them, and its tiny backbone has none, so it pretrains its own: the ResNet body of
the config's backbone learns to tell, per pixel, the pattern and the colour of textured
regions whose colours are not the benchmark's (:mod:`cagnet.data.pretraining`: orange, lime,
cyan, purple and magenta scenes with the benchmark's four patterns and four others).

::

    scenes [N,3,S,S] -> DeepLabV2 body (stem, res2..res5; trainable BN) -> [N, 32b, S/8, S/8]
                     -> 1x1 conv -> pattern logits [N, P, S/8, S/8] ; colour logits [N, K, S/8, S/8]
    loss = cross-entropy(pattern) + cross-entropy(colour), labels nearest-resized to the grid

Only the ResNet body is kept (like an ImageNet initialisation, which has no segmentation
head): it is written in the layout of the original DeepLabV2 initialisation file
(``back.scale.layer1...``), so that every method loads it through the same path as the
authors' weights (:func:`cagnet.models.load_checkpoint`, ``--init-model``); the ASPP, the
contextual module and the heads start from their usual initialisation.

When the config's benchmark has a scene factor (``data.synthetic.appearance: scene``), the
pretraining scenes are lit with the same strengths (:func:`scene_lighting`), as the photographs
of ImageNet are.

The result is cached: ``<cache_dir>/deeplabv2_<shape>_<digest>.pt`` with a JSON description
beside it, where the digest covers everything that decides the weights (the ``pretrain``
section, the backbone's depth and width, the input normalisation and, for lit scenes, the
scene factor's strengths; plain scenes have the recipe they had before scenes could be lit). A schedule whose
``init_model`` is ``pretrained`` starts from it, building it first when it is missing
(:func:`resolve_init_model`); ``python -m cagnet pretrain --config tutorial`` builds it ahead.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cagnet.config import PretrainConfig, TrainConfig
from cagnet.config_io import to_dict
from cagnet.data.pretraining import (PRETRAIN_COLOURS, PRETRAIN_PATTERNS, PretrainingSceneConfig,
                                     generate_pretraining_set)
from cagnet.data.scenes import SceneLighting
from cagnet.data.transforms import normalize_image, resize_labels
from cagnet.errors import ConfigError
from cagnet.files import atomic_write, atomic_write_text
from cagnet.models.backbone import DeepLabV2
from cagnet.models.cagnet import kaiming_init
from cagnet.models.convert import project_to_original_key
from cagnet.runtime import seed_everything, torch_threads

#: ``init_model`` value that names the config's pretrained backbone.
PRETRAINED = "pretrained"
#: Held-out scenes (drawn after the training scenes) on which the accuracies are measured.
HELD_OUT_SCENES = 64
#: Version of the pretraining recipe's code; part of the cache digest.
FORMAT_VERSION = 1


class PretrainNet(nn.Module):
    """DeepLabV2 body with a 1x1 per-pixel head for pattern and colour.

    ``forward(image [N,3,H,W])`` -> (pattern logits [N, P, h, w], colour logits [N, K, h, w]).
    Batch norm trains (the statistics a frozen-BN backbone later uses come from here).
    """

    def __init__(self, blocks, base_width: int, num_patterns: int = len(PRETRAIN_PATTERNS),
                 num_colours: int = len(PRETRAIN_COLOURS)) -> None:
        super().__init__()
        # feature_dim 1: the ASPP is not used (DeepLabV2.body stops before it) and not saved
        self.backbone = DeepLabV2(blocks, base_width, 1, freeze_bn=False)
        self.head = nn.Conv2d(32 * base_width, num_patterns + num_colours, 1)
        self.num_patterns = num_patterns
        kaiming_init(self)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.backbone.body(image))
        return logits[:, :self.num_patterns], logits[:, self.num_patterns:]

    def body_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """The ResNet body's tensors in the original DeepLabV2 layout (``back.scale.layer...``)."""
        state = OrderedDict()
        for key, value in self.backbone.state_dict().items():
            if key.startswith(("stem.", "res")):
                state[project_to_original_key("backbone." + key)] = value.detach().cpu().clone()
        return state


@dataclass
class PretrainResult:
    """What :func:`pretrain_backbone` / :func:`ensure_pretrained` return.

    ``path``: the weights file; ``info``: its JSON description (settings, held-out accuracies
    of the pattern and colour heads, chance levels, training seconds); ``reused``: True when the
    cached file was used as it was.
    """

    path: Path
    info: dict[str, Any]
    reused: bool = False


def _require(config: TrainConfig) -> PretrainConfig:
    if config.pretrain is None:
        raise ConfigError(f"config {config.name!r} has no pretrain section: it cannot use "
                          f"init_model: {PRETRAINED} (give a weights file instead)")
    return config.pretrain


def scene_lighting(config: TrainConfig) -> SceneLighting | None:
    """The scene factor of the pretraining scenes: the strengths of the benchmark's when
    ``data.synthetic`` asks for ``appearance: scene``, else None (plain scenes). A dataset
    given only by ``data.root`` (``data.synthetic: null``) is not read for it."""
    if config.data.synthetic is None:
        return None
    from cagnet.data.synthetic import SyntheticConfig

    benchmark = SyntheticConfig.from_dict(dict(config.data.synthetic))
    return benchmark.lighting if benchmark.appearance == "scene" else None


def recipe(config: TrainConfig) -> dict[str, Any]:
    """Everything that decides the pretrained weights, as plain data (with a ``lighting`` entry
    only for lit scenes, so that the plain recipe and its cached weights stay what they were)."""
    settings = to_dict(_require(config))
    settings.pop("cache_dir")
    result = {"format": FORMAT_VERSION, "pretrain": settings, "backbone_blocks": list(config.model.backbone_blocks),
              "base_width": config.model.base_width, "normalization": config.data.normalization,
              "patterns": list(PRETRAIN_PATTERNS), "colours": list(PRETRAIN_COLOURS)}
    lighting = scene_lighting(config)
    if lighting is not None:
        result["lighting"] = to_dict(lighting)
    return result


def default_cache_dir() -> Path:
    """``data/pretrained`` of the project (beside the embedded benchmark)."""
    from cagnet.files import project_root

    return project_root() / "data" / "pretrained"


def pretrained_path(config: TrainConfig) -> Path:
    """The cache file of ``config``'s pretrained backbone (which may not exist yet)."""
    settings = _require(config)
    digest = hashlib.sha256(json.dumps(recipe(config), sort_keys=True).encode()).hexdigest()[:12]
    blocks = "-".join(str(b) for b in config.model.backbone_blocks)
    folder = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
    return folder / f"deeplabv2_{blocks}_w{config.model.base_width}_{digest}.pt"


def _info_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _normalised(images: np.ndarray, normalization: str) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float [N, 3, S, S] with the config's input normalisation."""
    return torch.stack([normalize_image(image, normalization) for image in images])


def _held_out_accuracy(model: PretrainNet, images: torch.Tensor, patterns: torch.Tensor, colours: torch.Tensor,
                       device: torch.device) -> tuple[float, float]:
    """Pixel accuracies (pattern, colour) on the feature grid of held-out scenes."""
    model.eval()
    correct_pattern = correct_colour = total = 0
    with torch.no_grad():
        for start in range(0, len(images), 16):
            pattern_logits, colour_logits = model(images[start:start + 16].to(device))
            grid = pattern_logits.shape[-2:]
            pattern_target = resize_labels(patterns[start:start + 16], grid).to(device)
            colour_target = resize_labels(colours[start:start + 16], grid).to(device)
            correct_pattern += int((pattern_logits.argmax(1) == pattern_target).sum())
            correct_colour += int((colour_logits.argmax(1) == colour_target).sum())
            total += pattern_target.numel()
    model.train()
    return correct_pattern / total, correct_colour / total


def pretrain_backbone(config: TrainConfig, out: str | Path | None = None, *, device: torch.device | str | None = None,
                      progress: bool = True) -> PretrainResult:
    """Pretrain the body of ``config``'s backbone and write it (atomically) to ``out``
    (default :func:`pretrained_path`), with its JSON description beside it.

    Deterministic for a given config on the same hardware and thread count.
    """
    from tqdm.auto import tqdm

    from cagnet.train.distributed import resolve_device

    settings = _require(config)
    path = Path(out) if out is not None else pretrained_path(config)
    device = resolve_device(config.runtime.device) if device is None else torch.device(device)
    started = time.perf_counter()
    with torch_threads(config.runtime.num_threads):
        scenes = PretrainingSceneConfig(seed=settings.seed, num_images=settings.num_images + HELD_OUT_SCENES,
                                        image_size=settings.image_size, lighting=scene_lighting(config))
        images, patterns, colours = generate_pretraining_set(scenes, progress=progress)
        images = _normalised(images, config.data.normalization)
        patterns, colours = torch.from_numpy(patterns).long(), torch.from_numpy(colours).long()
        train = slice(0, settings.num_images)
        held_out = slice(settings.num_images, None)

        seed_everything(settings.seed)
        model = PretrainNet(config.model.backbone_blocks, config.model.base_width).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        rng = torch.Generator().manual_seed(settings.seed)
        model.train()
        bar = tqdm(range(settings.iterations), desc="pretraining", unit="it", disable=not progress)
        for iteration in bar:
            for group in optimizer.param_groups:  # poly decay, as the segmentation schedules
                group["lr"] = settings.lr * (1 - iteration / settings.iterations) ** 0.9
            index = torch.randint(settings.num_images, (settings.batch_size,), generator=rng)
            flip = (torch.rand(settings.batch_size, generator=rng) < 0.5).view(-1, 1, 1)
            image = images[train][index]
            image = torch.where(flip[:, None], image.flip(-1), image).to(device, non_blocking=True)
            pattern = torch.where(flip, patterns[train][index].flip(-1), patterns[train][index])
            colour = torch.where(flip, colours[train][index].flip(-1), colours[train][index])
            pattern_logits, colour_logits = model(image)
            grid = pattern_logits.shape[-2:]
            loss = (F.cross_entropy(pattern_logits, resize_labels(pattern, grid).to(device))
                    + F.cross_entropy(colour_logits, resize_labels(colour, grid).to(device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress and (iteration + 1) % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        pattern_accuracy, colour_accuracy = _held_out_accuracy(model, images[held_out], patterns[held_out],
                                                               colours[held_out], device)
    info = {
        "recipe": recipe(config),
        "held_out_scenes": HELD_OUT_SCENES,
        "pattern_accuracy": pattern_accuracy,
        "colour_accuracy": colour_accuracy,
        "pattern_chance": 1.0 / len(PRETRAIN_PATTERNS),
        "colour_chance": 1.0 / len(PRETRAIN_COLOURS),
        "seconds": time.perf_counter() - started,
        "device": str(device),
    }
    state = model.body_state_dict()
    atomic_write(path, lambda stream: torch.save({"iteration": settings.iterations, "state_dict": state}, stream))
    atomic_write_text(_info_path(path), json.dumps(info, indent=1) + "\n")
    return PretrainResult(path=path, info=info)


def cached_pretrained(config: TrainConfig) -> PretrainResult | None:
    """The cached pretrained backbone of ``config`` when it exists and matches its recipe."""
    path = pretrained_path(config)
    try:
        info = json.loads(_info_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not path.is_file() or not isinstance(info, dict) or info.get("recipe") != recipe(config):
        return None
    return PretrainResult(path=path, info=info, reused=True)


def ensure_pretrained(config: TrainConfig, *, force: bool = False, progress: bool = True) -> PretrainResult:
    """The pretrained backbone of ``config``: the cached one, or a new one trained now."""
    cached = None if force else cached_pretrained(config)
    return cached if cached is not None else pretrain_backbone(config, progress=progress)


def resolve_init_model(source: str | Path | None, config: TrainConfig, *, progress: bool = True
                       ) -> str | Path | None:
    """An ``init_model`` value as a loadable source: ``pretrained`` becomes the path of the
    config's pretrained backbone (trained first when missing); anything else is returned as is."""
    if source is None or str(source) != PRETRAINED:
        return source
    return ensure_pretrained(config, progress=progress).path


def describe(result: PretrainResult) -> str:
    """One line: where the weights are and how well the heads classify held-out scenes."""
    info = result.info
    origin = "cached" if result.reused else f"trained in {info['seconds']:.0f} s"
    return (f"{result.path} ({origin}): held-out "
            f"pattern accuracy {info['pattern_accuracy']:.1%} (chance {info['pattern_chance']:.1%}), "
            f"colour accuracy {info['colour_accuracy']:.1%} (chance {info['colour_chance']:.1%})")
