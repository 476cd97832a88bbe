"""Checkpoints in the original CaGNet layout <-> the project's :class:`CaGNet`.

The original saves ``{'iteration': int, 'state_dict': OurModel.state_dict()}``; its keys are
listed in the reference manifests. The project's modules have descriptive names; this table
maps one layout onto the other (``<s>`` stage 2..5, ``<b>`` 1-based block, ``<i>`` index,
``<n>`` = number of generator hidden layers, ``<p>`` parameter / buffer name)::

    original key                                          project key
    Em_vis.weight                                          seen_class_embeddings
    Em_all.weight                                          class_embeddings
    gen.mlp.<i>.conv.<p>          (i < n)                  generator.hidden.<i>.<p>
    gen.mlp.<n>.<p>                                        generator.output.<p>
    dis.fc.conv.<p>                                        discriminator.shared.<p>
    dis.pred.<p>                                           discriminator.gan_head.<p>
    dis.cls.<p>                                            discriminator.cls_head.<p>
    back.scale.layer1.conv1.{conv,bn}.<p>                  backbone.stem.conv.{conv,bn}.<p>
    back.scale.layer<s>.block<b>.{reduce,conv3x3,increase}.<p>
                                                           backbone.res<s>.<b-1>.{reduce,conv3x3,increase}.<p>
    back.scale.layer<s>.block<b>.proj.<p>                  backbone.res<s>.<b-1>.shortcut.<p>
    back.scale.aspp.stages.c<i>.<p>                        backbone.aspp.branches.<i>.<p>
    back.scale.contextual<k>.conv.weight                   context.branches.<k-1>.weight
    back.scale.fc_1.conv.weight                            context.gates.weight
    back.scale.contextualpool.conv.weight                  context.fuse.weight
    back.scale.contextuallocalmu.conv.weight               context.mu.weight
    back.scale.contextuallocalsigma.conv.weight            context.logvar.weight

``back.`` is the original's multi-scale wrapper and ``scale.`` the network it runs at every
scale; the project runs the same modules per scale without a wrapper.

Accepted files (:func:`load_checkpoint`): a full original checkpoint (wrapped or bare state
dict, optionally with the ``module.`` prefix of DataParallel), a backbone-only DeepLabV2 init
file (``deeplabv2_resnet101_init.pth``: keys under ``back.scale.``, or the same keys with the
prefix ``scale.`` or none; it must cover the whole ResNet body, and the report lists the parts
left initialised), or a state dict of the project's own layout. Files are read with
``torch.load(weights_only=True)``; any mismatch raises :class:`CheckpointError` in one line.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from cagnet.errors import CheckpointError

ORIGINAL_BACKBONE_PREFIX = "back.scale."
_PARTS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_MAX_LISTED = 4

# (original regex, project key from the match and n) -- original -> project
_TO_PROJECT: list[tuple[re.Pattern, Callable[[re.Match, int], str | None]]] = [
    (re.compile(r"Em_vis\.weight"), lambda m, n: "seen_class_embeddings"),
    (re.compile(r"Em_all\.weight"), lambda m, n: "class_embeddings"),
    (re.compile(r"gen\.mlp\.(\d+)\.conv\.(weight|bias)"),
     lambda m, n: f"generator.hidden.{m[1]}.{m[2]}" if int(m[1]) < n else None),
    (re.compile(r"gen\.mlp\.(\d+)\.(weight|bias)"),
     lambda m, n: f"generator.output.{m[2]}" if int(m[1]) == n else None),
    (re.compile(r"dis\.fc\.conv\.(weight|bias)"), lambda m, n: f"discriminator.shared.{m[1]}"),
    (re.compile(r"dis\.pred\.(weight|bias)"), lambda m, n: f"discriminator.gan_head.{m[1]}"),
    (re.compile(r"dis\.cls\.(weight|bias)"), lambda m, n: f"discriminator.cls_head.{m[1]}"),
    (re.compile(r"back\.scale\.layer1\.conv1\.(conv\.weight|bn\." + _PARTS + ")"),
     lambda m, n: f"backbone.stem.conv.{m[1]}"),
    (re.compile(r"back\.scale\.layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase)\.(conv\.weight|bn\." + _PARTS + ")"),
     lambda m, n: f"backbone.res{m[1]}.{int(m[2]) - 1}.{m[3]}.{m[4]}" if int(m[2]) >= 1 else None),
    (re.compile(r"back\.scale\.layer([2-5])\.block(\d+)\.proj\.(conv\.weight|bn\." + _PARTS + ")"),
     lambda m, n: f"backbone.res{m[1]}.{int(m[2]) - 1}.shortcut.{m[3]}" if int(m[2]) >= 1 else None),
    (re.compile(r"back\.scale\.aspp\.stages\.c(\d+)\.(weight|bias)"), lambda m, n: f"backbone.aspp.branches.{m[1]}.{m[2]}"),
    (re.compile(r"back\.scale\.contextual(\d+)\.conv\.weight"),
     lambda m, n: f"context.branches.{int(m[1]) - 1}.weight" if int(m[1]) >= 1 else None),
    (re.compile(r"back\.scale\.fc_1\.conv\.weight"), lambda m, n: "context.gates.weight"),
    (re.compile(r"back\.scale\.contextualpool\.conv\.weight"), lambda m, n: "context.fuse.weight"),
    (re.compile(r"back\.scale\.contextuallocalmu\.conv\.weight"), lambda m, n: "context.mu.weight"),
    (re.compile(r"back\.scale\.contextuallocalsigma\.conv\.weight"), lambda m, n: "context.logvar.weight"),
]

# project -> original
_TO_ORIGINAL: list[tuple[re.Pattern, Callable[[re.Match, int], str]]] = [
    (re.compile(r"seen_class_embeddings"), lambda m, n: "Em_vis.weight"),
    (re.compile(r"class_embeddings"), lambda m, n: "Em_all.weight"),
    (re.compile(r"generator\.hidden\.(\d+)\.(weight|bias)"), lambda m, n: f"gen.mlp.{m[1]}.conv.{m[2]}"),
    (re.compile(r"generator\.output\.(weight|bias)"), lambda m, n: f"gen.mlp.{n}.{m[1]}"),
    (re.compile(r"discriminator\.shared\.(weight|bias)"), lambda m, n: f"dis.fc.conv.{m[1]}"),
    (re.compile(r"discriminator\.gan_head\.(weight|bias)"), lambda m, n: f"dis.pred.{m[1]}"),
    (re.compile(r"discriminator\.cls_head\.(weight|bias)"), lambda m, n: f"dis.cls.{m[1]}"),
    (re.compile(r"backbone\.stem\.conv\.(.+)"), lambda m, n: f"back.scale.layer1.conv1.{m[1]}"),
    (re.compile(r"backbone\.res([2-5])\.(\d+)\.(reduce|conv3x3|increase)\.(.+)"),
     lambda m, n: f"back.scale.layer{m[1]}.block{int(m[2]) + 1}.{m[3]}.{m[4]}"),
    (re.compile(r"backbone\.res([2-5])\.(\d+)\.shortcut\.(.+)"),
     lambda m, n: f"back.scale.layer{m[1]}.block{int(m[2]) + 1}.proj.{m[3]}"),
    (re.compile(r"backbone\.aspp\.branches\.(\d+)\.(weight|bias)"), lambda m, n: f"back.scale.aspp.stages.c{m[1]}.{m[2]}"),
    (re.compile(r"context\.branches\.(\d+)\.weight"), lambda m, n: f"back.scale.contextual{int(m[1]) + 1}.conv.weight"),
    (re.compile(r"context\.gates\.weight"), lambda m, n: "back.scale.fc_1.conv.weight"),
    (re.compile(r"context\.fuse\.weight"), lambda m, n: "back.scale.contextualpool.conv.weight"),
    (re.compile(r"context\.mu\.weight"), lambda m, n: "back.scale.contextuallocalmu.conv.weight"),
    (re.compile(r"context\.logvar\.weight"), lambda m, n: "back.scale.contextuallocalsigma.conv.weight"),
]


def original_to_project_key(key: str, generator_layers: int = 5) -> str | None:
    """Project key of an original key, or None if the original layout has no such key.

    ``generator_layers`` = number of hidden generator layers (the output conv is ``gen.mlp.<n>``).
    """
    for pattern, convert in _TO_PROJECT:
        m = pattern.fullmatch(key)
        if m:
            return convert(m, generator_layers)
    return None


def project_to_original_key(key: str, generator_layers: int = 5) -> str:
    """Original key of a project key; KeyError for a key outside the mapping."""
    for pattern, convert in _TO_ORIGINAL:
        m = pattern.fullmatch(key)
        if m:
            return convert(m, generator_layers)
    raise KeyError(f"project key {key!r} has no counterpart in the original layout")


def _generator_layers(model: nn.Module) -> int:
    return len(model.generator.hidden)


def to_original_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The model's state dict with the original's key names (same tensors, not copies).

    For the original configurations its keys, shapes and dtypes are those of the manifests.
    """
    n = _generator_layers(model)
    return OrderedDict((project_to_original_key(k, n), v) for k, v in model.state_dict().items())


def save_original_checkpoint(model: nn.Module, path: str | os.PathLike, iteration: int = 0) -> Path:
    """Write ``{'iteration': iteration, 'state_dict': <original layout>}`` to ``path``."""
    path = Path(path)
    state = OrderedDict((k, v.detach().cpu()) for k, v in to_original_state_dict(model).items())
    torch.save({"iteration": int(iteration), "state_dict": state}, path)
    return path


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any], name: str | None = None
                    ) -> tuple["OrderedDict[str, torch.Tensor]", int | None, str]:
    """Safely read a checkpoint: (state dict without ``module.`` prefixes, iteration or None, name).

    ``source`` is a path (read with ``torch.load(weights_only=True)`` on the CPU) or an
    already loaded mapping. ``{'iteration', 'state_dict'}`` wrappers are unwrapped.
    """
    if isinstance(source, Mapping):
        name = name or "<state dict>"
        data: Any = source
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path}: file not found")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pickle-protocol notices of the safe unpickler
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling refusals, truncated archives, foreign formats
            raise CheckpointError(f"checkpoint {name}: {_load_failure(err)}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {name}: expected a state dict or {{'iteration', 'state_dict'}}, "
                              f"got {type(data).__name__}")
    iteration = None
    if "state_dict" in data:
        if "iteration" in data:
            try:
                iteration = int(data["iteration"])
            except (TypeError, ValueError):
                raise CheckpointError(f"checkpoint {name}: 'iteration' is not an integer "
                                      f"({data['iteration']!r})") from None
        data = data["state_dict"]
        if not isinstance(data, Mapping):
            raise CheckpointError(f"checkpoint {name}: 'state_dict' is a {type(data).__name__}, not a mapping")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in data.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"checkpoint {name}: entry {key!r} is not a named tensor ({type(value).__name__})")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    if not state:
        raise CheckpointError(f"checkpoint {name}: the state dict is empty")
    return state, iteration, name


def _load_failure(err: Exception) -> str:
    """One-line reason why ``torch.load(weights_only=True)`` failed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    unsupported = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+)", text)
    if unsupported:
        return (f"refused by safe loading (weights_only): {unsupported.group(0)}; the file holds Python "
                f"objects other than tensors or is not a PyTorch file")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"not a readable PyTorch weights file ({type(err).__name__}: {first[:160]})"


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        source: file name (or ``<state dict>``).
        layout: ``original`` (full checkpoint), ``backbone`` (DeepLabV2 init file) or ``project``.
        iteration: the iteration stored in the file, if any.
        loaded: project keys that received values.
        left_initialised: model parts (module paths) that kept their current values.
    """

    source: str
    layout: str
    iteration: int | None = None
    loaded: list[str] = field(default_factory=list)
    left_initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: {self.layout} layout, {len(self.loaded)} tensors loaded"
        if self.iteration is not None:
            text += f", iteration {self.iteration}"
        if self.left_initialised:
            text += f"; left initialised: {', '.join(self.left_initialised)}"
        return text


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _module_of(key: str) -> str:
    """Readable part name of a project key: 'backbone.aspp', 'backbone.res4', 'context', ..."""
    parts = key.split(".")
    if parts[0] == "backbone":
        return ".".join(parts[:2])
    return parts[0]


def _normalise_backbone_prefix(state: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """DeepLabV2 init files may carry the backbone keys as ``scale.*`` or bare ``layer1.*``."""
    keys = list(state)
    if all(k.startswith("scale.") for k in keys):
        return OrderedDict(("back." + k, v) for k, v in state.items())
    if all(re.match(r"(layer\d|aspp|contextual|fc_1)", k) for k in keys):
        return OrderedDict((ORIGINAL_BACKBONE_PREFIX + k, v) for k, v in state.items())
    return state


def _is_resnet_body(project_key: str) -> bool:
    return project_key.startswith(("backbone.stem.", "backbone.res"))


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *,
                    name: str | None = None) -> LoadReport:
    """Load a checkpoint (original, DeepLabV2 init or project layout) into ``model``.

    Shapes are checked before anything is copied; a mismatch, an unknown key or a missing
    key raises :class:`CheckpointError` naming the file and the first few keys, and leaves
    the model unchanged. Missing ``num_batches_tracked`` entries (files written before
    PyTorch 0.4.1) are tolerated. A backbone-only file must cover the whole ResNet body
    (stem, res2..res5); the other parts are left as they are and listed in the report.
    """
    state, iteration, name = read_checkpoint(source, name)
    target = model.state_dict()
    n = _generator_layers(model)

    if set(state) <= set(target):
        layout, mapped, unexpected = "project", state, []
    else:
        state = _normalise_backbone_prefix(state)
        backbone_only = all(k.startswith(ORIGINAL_BACKBONE_PREFIX) for k in state)
        layout = "backbone" if backbone_only else "original"
        mapped = OrderedDict()
        unexpected = []
        for key, value in state.items():
            project_key = original_to_project_key(key, n)
            if project_key is None or project_key not in target:
                unexpected.append(key)
            else:
                mapped[project_key] = value

    def shown(project_key: str) -> str:
        return project_key if layout == "project" else project_to_original_key(project_key, n)

    mismatched = [f"{shown(k)} file {list(v.shape)} vs model {list(target[k].shape)}"
                  for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    required = [k for k in missing if layout != "backbone" or _is_resnet_body(k)]
    problems = []
    if required:
        problems.append(f"missing keys: {_listing([shown(k) for k in required])}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"checkpoint {name} ({layout} layout) does not match the model: " + "; ".join(problems))

    model.load_state_dict(mapped, strict=False)
    left = sorted({_module_of(k) for k in missing})
    return LoadReport(source=name, layout=layout, iteration=iteration, loaded=list(mapped), left_initialised=left)


def config_from_original_state_dict(state: Mapping[str, torch.Tensor], num_unseen: int, **overrides: Any):
    """The :class:`ModelConfig` whose model has exactly the shapes of an original-layout state dict.

    Depth, widths and dims are read from the shapes (``module.`` prefixes are ignored); the
    seen/unseen split is not in the file, hence ``num_unseen``; neither are dilations and
    dropout rates (the original's are kept; a generator of another depth gets dropout 0).
    ``overrides`` set any field (e.g. ``scales``). Raises :class:`CheckpointError` when an expected key is absent.
    """
    from cagnet.models.backbone import BACKBONE_PRESETS
    from cagnet.models.cagnet import model_config

    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"original state dict: key {key} not found; cannot infer the architecture")
        return tuple(state[key].shape)

    p = ORIGINAL_BACKBONE_PREFIX
    blocks = tuple(len({m[1] for k in state for m in [re.match(p + rf"layer{s}\.block(\d+)\.", k)] if m})
                   for s in (2, 3, 4, 5))
    base_width = shape(p + "layer1.conv1.conv.weight")[0]
    hidden = sorted(int(m[1]) for k in state for m in [re.fullmatch(r"gen\.mlp\.(\d+)\.conv\.weight", k)] if m)
    total_classes, embedding_dim = shape("Em_all.weight")
    aspp = sorted(int(m[1]) for k in state for m in [re.fullmatch(p + r"aspp\.stages\.c(\d+)\.weight", k)] if m)
    branches = sorted(int(m[1]) for k in state for m in [re.fullmatch(p + r"contextual(\d+)\.conv\.weight", k)] if m)
    backbone = next((name for name, (b, w) in BACKBONE_PRESETS.items() if b == blocks and w == base_width),
                    "deeplabv2_resnet101")
    values: dict[str, Any] = dict(
        backbone=backbone, backbone_blocks=blocks, base_width=base_width,
        feature_dim=shape(p + "aspp.stages.c0.weight")[0],
        context_width=shape(p + "contextual1.conv.weight")[0],
        embedding_dim=embedding_dim,
        generator_widths=tuple(shape(f"gen.mlp.{i}.conv.weight")[0] for i in hidden),
        discriminator_width=shape("dis.fc.conv.weight")[0],
        num_seen=total_classes - num_unseen, num_unseen=num_unseen,
        seen_table_rows=shape("Em_vis.weight")[0],
    )
    if len(hidden) != len(model_config("original").generator_dropouts):
        values["generator_dropouts"] = (0.0,) * len(hidden)
    if len(aspp) != 4:
        raise CheckpointError(f"original state dict: {len(aspp)} ASPP branches; dilations cannot be inferred")
    if len(branches) != 3:
        raise CheckpointError(f"original state dict: {len(branches)} contextual branches; dilations cannot be inferred")
    if shape("dis.cls.weight")[0] != total_classes + 1:
        raise CheckpointError(f"original state dict: dis.cls has {shape('dis.cls.weight')[0]} outputs, "
                              f"expected Em_all rows + 1 = {total_classes + 1}")
    values.update(overrides)
    return model_config("original", **values)
