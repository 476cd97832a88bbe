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
    dis.cls_3.<p>                 (patch classifier)       discriminator.patch_conv.<p>
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

Patch classifier (CaGNetv2, ``model.patch_size: 3``): its 3x3 conv ``dis.cls_3`` maps onto
``discriminator.patch_conv`` both ways (:func:`config_from_original_state_dict` reads the patch
size from its presence). A pixel-wise checkpoint (no ``cls_3``) starts a patch-wise model: the
missing ``patch_conv`` is set to the identity (centre tap = identity matrix, other taps and bias
0; :meth:`Discriminator.init_patch_conv_as_identity`) and listed under ``initialised`` in the
report. The patch model then predicts exactly what the pixel-wise checkpoint predicts, the
sensible start for a patch-wise finetuning: the default (Kaiming) init would put a random
linear map between the trained shared layer and the trained class head and throw the step-1
classifier away (the original cannot load such a file at all: strict loading). A patch-wise
checkpoint into a pixel-wise model is refused (the unexpected ``cls_3`` keys).
:func:`load_original_discriminator` / :func:`to_original_discriminator_state_dict` read and write
a discriminator's own state dict in the original layout (``fc.conv.*``, ``pred.*``, ``cls_3.*``,
``cls.*``, with or without ``dis.``).

The label-block PixelCNN of CaGNetv2 (:class:`cagnet.models.pixelcnn.LabelBlockPixelCNN`, its own
files: ``{'epoch', 'state_dict'}``, DataParallel's ``module.`` prefix) maps as (``<k>`` = 1-based
masked layer, ``<n>`` = their number, 8)::

    conv<k>.0.weight                                       layers.<k-1>.conv.weight
    conv<k>.0.mask                (checked, not stored)    (the mask of layers.<k-1>.conv)
    conv<k>.1.<p>                                          layers.<k-1>.norm.<p>
    conv<n+1>.<p>                                          output.<p>
    b<k>                                                   layers.<k-1>.condition_weight
    (none: the original keeps the table outside the net)   class_embeddings

(:func:`load_original_pixelcnn`, :func:`to_original_pixelcnn_state_dict`).

Accepted files (:func:`load_checkpoint`): a full original checkpoint (wrapped or bare state
dict, optionally with the ``module.`` prefix of DataParallel), a backbone-only DeepLabV2 init
file (``deeplabv2_resnet101_init.pth``: keys under ``back.scale.``, or the same keys with the
prefix ``scale.`` or none; it must cover the whole ResNet body, and the report lists the parts
left initialised), or a state dict of the project's own layout. Files are read with
``torch.load(weights_only=True)``; any mismatch raises :class:`CheckpointError` in one line.

torchvision's ImageNet ResNets (``torchvision:resnet101``, or a file holding the
``state_dict()`` of a ``torchvision.models.resnet50/101/152``) load into the ResNet body as a
fourth layout, ``torchvision``::

    torchvision key                                        project key
    conv1.weight, bn1.<p>                                  backbone.stem.conv.{conv.weight, bn.<p>}
    layer<k>.<b>.conv1.weight, bn1.<p>   (k = 1..4)        backbone.res<k+1>.<b>.reduce.{conv.weight, bn.<p>}
    layer<k>.<b>.conv2.weight, bn2.<p>                     backbone.res<k+1>.<b>.conv3x3.{...}
    layer<k>.<b>.conv3.weight, bn3.<p>                     backbone.res<k+1>.<b>.increase.{...}
    layer<k>.<b>.downsample.0.weight, downsample.1.<p>     backbone.res<k+1>.<b>.shortcut.{...}
    fc.weight, fc.bias                                     (none: ignored, listed in the report)

BN layers copy as they are (weight, bias, running statistics): the frozen BN of the backbone
has the state of ``nn.BatchNorm2d`` and the same eps (1e-5). Same weights do not make the same
network, though. With the converted weights, the backbone's layers compute, given the same
input, what torchvision's compute (to float rounding) in:

* the stem's 7x7 conv, BN and ReLU;
* the stem's 3x3/2 max-pool wherever both produce an output: DeepLabV2 pools in ceil mode,
  torchvision in floor mode, so when the conv output side is even (input side 4k or 4k + 3)
  DeepLabV2 has one more row / column; with input sides 4k + 1 or 4k + 2 the outputs are equal;
* every block of res2 (stride 1, no dilation in both);
* res3: every block after the first, and the first block's shortcut (1x1 conv, stride 2, in
  both);
* res4 / res5: the blocks after the first equal those of torchvision's *dilated* ResNet
  (``replace_stride_with_dilation=[False, True, True]``, dilation 2 in layer3 and 4 in layer4,
  output stride 8), as does res4's first-block shortcut (1x1, stride 1).

They differ where the architectures differ: torchvision's ResNet v1.5 puts the stride of
res3's first block on its 3x3 conv, Caffe-style DeepLabV2 on the 1x1 reduce conv before it;
the first blocks of res4 / res5 dilate their 3x3 conv by 2 / 4 where torchvision's plain ResNet
strides by 2 (and its dilated variant dilates by 1 / 2). Every feature after res3's first
block therefore differs from any torchvision output; the weights are a start that training
adapts, as DeepLabV2 itself started from ImageNet classification weights. The ASPP and the
other CaGNet parts have no counterpart and keep their initial values.

Input normalisation: each layout's weights expect the input they were trained with
(:data:`LAYOUT_NORMALIZATION`): the original and DeepLabV2 files BGR 0..255 minus the mean
(``data.normalization: caffe``), torchvision's RGB / 255 normalised with the ImageNet mean and
std (``imagenet``). :func:`check_input_normalization` turns a mismatch with the config into an
error.
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

from cagnet.errors import CheckpointError, ConfigError

ORIGINAL_BACKBONE_PREFIX = "back.scale."
#: ``--init-model`` / :func:`load_checkpoint` source naming torchvision ImageNet weights:
#: ``torchvision:<model>`` (weights IMAGENET1K_V1) or ``torchvision:<model>:<weights>``
TORCHVISION_SOURCE = "torchvision:"
TORCHVISION_RESNETS = ("resnet50", "resnet101", "resnet152")
TORCHVISION_DEFAULT_WEIGHTS = "IMAGENET1K_V1"
#: input normalisation (:mod:`cagnet.data.transforms`) the weights of each layout were trained
#: with; a project-layout file says it only when it is a training checkpoint with its config
LAYOUT_NORMALIZATION = {"original": "caffe", "backbone": "caffe", "torchvision": "imagenet"}
_NORMALIZATION_TEXT = {"caffe": "BGR 0..255 minus the mean", "imagenet": "RGB / 255 with the ImageNet mean and std"}
_PARTS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
#: project keys of the patch classifier's 3x3 conv, and of the head every classifier has
PATCH_CONV_PREFIX = "discriminator.patch_conv."
PIXELWISE_HEAD_KEY = "discriminator.cls_head.weight"
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
    (re.compile(r"dis\.cls_3\.(weight|bias)"), lambda m, n: f"discriminator.patch_conv.{m[1]}"),
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
    (re.compile(r"discriminator\.patch_conv\.(weight|bias)"), lambda m, n: f"dis.cls_3.{m[1]}"),
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


_TORCHVISION_CONVS = {"1": "reduce", "2": "conv3x3", "3": "increase"}
_TORCHVISION_TO_PROJECT: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"conv1\.weight"), lambda m: "backbone.stem.conv.conv.weight"),
    (re.compile(r"bn1\." + _PARTS), lambda m: f"backbone.stem.conv.bn.{m[1]}"),
    (re.compile(r"layer([1-4])\.(\d+)\.conv([1-3])\.weight"),
     lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.{_TORCHVISION_CONVS[m[3]]}.conv.weight"),
    (re.compile(r"layer([1-4])\.(\d+)\.bn([1-3])\." + _PARTS),
     lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.{_TORCHVISION_CONVS[m[3]]}.bn.{m[4]}"),
    (re.compile(r"layer([1-4])\.(\d+)\.downsample\.0\.weight"),
     lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.shortcut.conv.weight"),
    (re.compile(r"layer([1-4])\.(\d+)\.downsample\.1\." + _PARTS),
     lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.shortcut.bn.{m[3]}"),
]
#: torchvision keys without a DeepLabV2 counterpart (the ImageNet classifier)
_TORCHVISION_IGNORED = re.compile(r"fc\.(weight|bias)")


def torchvision_to_project_key(key: str) -> str | None:
    """Project key of a torchvision ResNet key (``layer3.5.conv2.weight`` ->
    ``backbone.res4.5.conv3x3.conv.weight``), or None (``fc.*`` and unknown keys)."""
    for pattern, convert in _TORCHVISION_TO_PROJECT:
        m = pattern.fullmatch(key)
        if m:
            return convert(m)
    return None


def project_to_torchvision_key(key: str) -> str:
    """Inverse of :func:`torchvision_to_project_key` (for messages); KeyError outside the ResNet body."""
    m = re.fullmatch(r"backbone\.stem\.conv\.(conv\.weight|bn\.(.+))", key)
    if m:
        return "conv1.weight" if m[2] is None else f"bn1.{m[2]}"
    m = re.fullmatch(r"backbone\.res([2-5])\.(\d+)\.(reduce|conv3x3|increase|shortcut)\.(conv\.weight|bn\.(.+))", key)
    if m:
        block = f"layer{int(m[1]) - 1}.{m[2]}"
        if m[3] == "shortcut":
            return f"{block}.downsample.0.weight" if m[5] is None else f"{block}.downsample.1.{m[5]}"
        index = {v: k for k, v in _TORCHVISION_CONVS.items()}[m[3]]
        return f"{block}.conv{index}.weight" if m[5] is None else f"{block}.bn{index}.{m[5]}"
    raise KeyError(f"project key {key!r} has no counterpart in a torchvision ResNet")


def is_torchvision_layout(state: Mapping[str, Any]) -> bool:
    """Whether a state dict is a torchvision ResNet's (``conv1.weight`` and ``layer1.0.conv1.weight``)."""
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def torchvision_weights(source: str):
    """The torchvision weights enum member a ``torchvision:<model>[:<weights>]`` source names
    (nothing is downloaded). ``torchvision:resnet101`` = ``ResNet101_Weights.IMAGENET1K_V1``."""
    from torchvision.models import get_model_weights

    spec = source[len(TORCHVISION_SOURCE):]
    arch, _, weights_name = spec.partition(":")
    if arch not in TORCHVISION_RESNETS:
        raise CheckpointError(f"{source}: unknown torchvision model {arch!r} (expected one of "
                              f"{', '.join(TORCHVISION_RESNETS)}, e.g. torchvision:resnet101)")
    members = get_model_weights(arch).__members__
    weights_name = weights_name or TORCHVISION_DEFAULT_WEIGHTS
    if weights_name not in members:
        raise CheckpointError(f"{source}: torchvision has no weights {weights_name!r} for {arch} "
                              f"(known: {', '.join(members)})")
    return members[weights_name]


def read_torchvision_weights(source: str) -> "OrderedDict[str, torch.Tensor]":
    """State dict of ``torchvision:<model>[:<weights>]`` through torchvision's weights API:
    read from torch's hub cache (``$TORCH_HOME/hub/checkpoints``), downloaded there once when
    absent, hash-checked and unpickled with ``weights_only=True``. Raises :class:`CheckpointError`
    in one line when the weights cannot be had (e.g. no network and no cached copy)."""
    weights = torchvision_weights(source)
    try:
        state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except Exception as err:  # network errors, hash mismatches, truncated downloads
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"{source}: cannot read torchvision's {weights} weights ({type(err).__name__}: {first[:160]}); "
            f"torchvision downloads them once into {torch.hub.get_dir()}/checkpoints, or pass the path of a "
            f"saved torchvision ResNet state dict") from None
    return OrderedDict(state)


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
    """Hidden layers of a CaGNet generator; 0 for models without one (the baselines, whose
    backbone alone takes original-layout weights)."""
    hidden = getattr(getattr(model, "generator", None), "hidden", None)
    return len(hidden) if isinstance(hidden, nn.ModuleList) else 0


def to_original_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The model's state dict with the original's key names (same tensors, not copies).

    For the original configurations its keys, shapes and dtypes are those of the manifests. A
    model with parts the original does not have (``semantic_norm: batch``), or that the original
    would run differently (``context_latent: none``, ``context_gates: false``: the same keys, another
    forward pass), is a CheckpointError.
    """
    extra = sorted({k.split(".")[0] for k in model.state_dict() if k.startswith("semantic_norm.")})
    if extra:
        raise CheckpointError(f"the model's {', '.join(extra)} (model.semantic_norm: batch) has no counterpart in "
                              "the original layout; save it with torch.save(model.state_dict(), path) instead")
    config = getattr(model, "config", None)
    for key, original in (("context_latent", "contextual"), ("context_gates", True)):
        value = getattr(config, key, original)
        if key == "context_latent" and value in ("zeroed", "shuffled"):
            continue   # a training-time ablation: the trained model runs as CaGNet does
        if value != original:
            raise CheckpointError(f"model.{key}: {value!r} runs differently in the original code (which has "
                                  f"{original!r}); save it with torch.save(model.state_dict(), path) instead")
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

    ``source`` is a path (read with ``torch.load(weights_only=True)`` on the CPU), a
    ``torchvision:<model>[:<weights>]`` name (:func:`read_torchvision_weights`) or an already
    loaded mapping. ``{'iteration', 'state_dict'}`` wrappers are unwrapped.
    """
    state, iteration, name, _ = _read(source, name)
    return state, iteration, name


def _trained_normalization(data: Mapping[str, Any]) -> str | None:
    """``data.normalization`` of the config a training checkpoint carries, if any."""
    config = data.get("config")
    section = config.get("data") if isinstance(config, Mapping) else None
    value = section.get("normalization") if isinstance(section, Mapping) else None
    return value if isinstance(value, str) else None


def _read(source, name):
    """:func:`read_checkpoint` plus the input normalisation a training checkpoint records."""
    if isinstance(source, str) and source.startswith(TORCHVISION_SOURCE):
        name = name or source
        data: Any = read_torchvision_weights(source)
    elif isinstance(source, Mapping):
        name = name or "<state dict>"
        data = source
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
    normalization = _trained_normalization(data)
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
    return state, iteration, name, normalization


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
        layout: ``original`` (full checkpoint), ``backbone`` (DeepLabV2 init file),
            ``torchvision`` (a torchvision ResNet) or ``project``.
        iteration: the iteration stored in the file, if any.
        loaded: project keys that received values.
        left_initialised: model parts (module paths) that kept their current values.
        ignored: keys of the file that have no counterpart by design (torchvision's ``fc``).
        initialised: model parts the file lacks that the loader set to a chosen start: a
            pixel-wise checkpoint into a patch model sets ``discriminator.patch_conv`` to the
            identity, so the patch head starts as the file's pixel-wise head.
        normalization: the input normalisation the weights were trained with
            (:data:`LAYOUT_NORMALIZATION`, or a training checkpoint's config), None if unknown.
    """

    source: str
    layout: str
    iteration: int | None = None
    loaded: list[str] = field(default_factory=list)
    left_initialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    normalization: str | None = None
    initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: {self.layout} layout, {len(self.loaded)} tensors loaded"
        if self.iteration is not None:
            text += f", iteration {self.iteration}"
        if self.left_initialised:
            text += f"; left initialised: {', '.join(self.left_initialised)}"
        if self.initialised:
            text += f"; initialised as the pixel-wise head (identity 3x3): {', '.join(self.initialised)}"
        if self.ignored:
            text += f"; ignored (no DeepLabV2 counterpart): {', '.join(self.ignored)}"
        return text


def check_input_normalization(report: LoadReport, normalization: str) -> None:
    """Raise :class:`ConfigError` when the loaded weights were trained on another input
    normalisation than ``normalization`` (the config's ``data.normalization``); nothing when
    the report does not know it."""
    expected = report.normalization
    if expected is not None and expected != normalization:
        raise ConfigError(
            f"{report.source}: these {report.layout}-layout weights expect data.normalization={expected} "
            f"({_NORMALIZATION_TEXT.get(expected, expected)}), the config has {normalization}; "
            f"add --set data.normalization={expected}")


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


def _map_torchvision(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
                     ) -> tuple["OrderedDict[str, torch.Tensor]", list[str], list[str]]:
    """(project-keyed tensors, unexpected keys, ignored keys) of a torchvision ResNet state dict."""
    mapped, unexpected, ignored = OrderedDict(), [], []
    for key, value in state.items():
        project_key = torchvision_to_project_key(key)
        if _TORCHVISION_IGNORED.fullmatch(key):
            ignored.append(key)
        elif project_key is None or project_key not in target:
            unexpected.append(key)
        else:
            mapped[project_key] = value
    return mapped, unexpected, ignored


def _is_resnet_body(project_key: str) -> bool:
    return project_key.startswith(("backbone.stem.", "backbone.res"))


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *,
                    name: str | None = None) -> LoadReport:
    """Load a checkpoint (original, DeepLabV2 init, torchvision ResNet or project layout) into ``model``.

    ``source``: a file, ``torchvision:<model>[:<weights>]`` (torchvision's ImageNet weights,
    see the module docstring) or a loaded mapping. Shapes are checked before anything is
    copied; a mismatch, an unknown key or a missing key raises :class:`CheckpointError`
    naming the file and the first few keys, and leaves the model unchanged. Missing
    ``num_batches_tracked`` entries (files written before PyTorch 0.4.1) are tolerated. A
    backbone-only file (DeepLabV2 init, torchvision) must cover the whole ResNet body (stem,
    res2..res5); the other parts are left as they are and listed in the report, torchvision's
    classifier ``fc`` is ignored and listed too. A pixel-wise checkpoint loads into a patch
    model (``model.patch_size: 3``): its ``discriminator.patch_conv`` starts as the identity
    (the model predicts what the checkpoint's pixel-wise head predicts) and the report lists
    it under ``initialised``. The report's ``normalization`` tells which input the weights
    expect (:func:`check_input_normalization`).
    """
    state, iteration, name, trained_normalization = _read(source, name)
    target = model.state_dict()
    n = _generator_layers(model)
    ignored: list[str] = []

    if set(state) <= set(target):
        layout, mapped, unexpected = "project", state, []
    elif is_torchvision_layout(state):
        layout = "torchvision"
        mapped, unexpected, ignored = _map_torchvision(state, target)
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
        if layout == "project":
            return project_key
        if layout == "torchvision":
            return project_to_torchvision_key(project_key)
        return project_to_original_key(project_key, n)

    mismatched = [f"{shown(k)} file {list(v.shape)} vs model {list(target[k].shape)}"
                  for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    body_only = layout in ("backbone", "torchvision")   # the rest of the model keeps its values
    # a pixel-wise checkpoint (its classifier head in the file, no patch conv) into a patch model
    patch_start = [k for k in missing if k.startswith(PATCH_CONV_PREFIX)]
    starts_patch_head = bool(patch_start) and not body_only and PIXELWISE_HEAD_KEY in mapped
    required = [k for k in missing if (not body_only or _is_resnet_body(k))
                and not (starts_patch_head and k in patch_start)]
    problems = []
    if required:
        problems.append(f"missing keys: {_listing([shown(k) for k in required])}")
    if unexpected:
        hint = ""
        if any(re.fullmatch(r"(discriminator\.patch_conv|dis\.cls_3)\.(weight|bias)", k) for k in unexpected):
            hint = " (a patch-classifier checkpoint: build the model with model.patch_size=3)"
        problems.append(f"unexpected keys: {_listing(unexpected)}{hint}")
    if mismatched:
        problems.append(f"shape mismatch: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"checkpoint {name} ({layout} layout) does not match the model: " + "; ".join(problems))

    model.load_state_dict(mapped, strict=False)
    initialised = []
    if starts_patch_head:
        model.discriminator.init_patch_conv_as_identity()
        initialised = [PATCH_CONV_PREFIX.rstrip(".")]
    left = sorted({_module_of(k) for k in missing if not (starts_patch_head and k in patch_start)})
    normalization = trained_normalization if layout == "project" else LAYOUT_NORMALIZATION[layout]
    return LoadReport(source=name, layout=layout, iteration=iteration, loaded=list(mapped), left_initialised=left,
                      ignored=ignored, normalization=normalization, initialised=initialised)


def config_from_original_state_dict(state: Mapping[str, torch.Tensor], num_unseen: int, **overrides: Any):
    """The :class:`ModelConfig` whose model has exactly the shapes of an original-layout state dict.

    Depth, widths and dims are read from the shapes (``module.`` prefixes are ignored); the
    seen/unseen split is not in the file, hence ``num_unseen``; neither are dilations and
    dropout rates (the original's are kept; a generator of another depth gets dropout 0).
    ``overrides`` set any field (e.g. ``scales``). ``patch_size`` is 3 when the file has the patch
    classifier's ``dis.cls_3`` (its kernel side), else 1. Raises :class:`CheckpointError` when an
    expected key is absent.
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
    if "dis.cls_3.weight" in state:   # CaGNetv2's patch classifier (Discriminator_ps3)
        patch_shape = shape("dis.cls_3.weight")
        width = values["discriminator_width"]
        if patch_shape[:2] != (width, width) or patch_shape[2] != patch_shape[3]:
            raise CheckpointError(f"original state dict: dis.cls_3 has shape {list(patch_shape)}, expected "
                                  f"[{width}, {width}, k, k] (a square conv on the discriminator's width)")
        values["patch_size"] = patch_shape[2]
    values.update(overrides)
    return model_config("original", **values)


# ------------------------------------------------------------------ a discriminator's own state dict
ORIGINAL_DISCRIMINATOR_PREFIX = "dis."


def load_original_discriminator(discriminator: nn.Module, source: str | os.PathLike | Mapping[str, Any], *,
                                name: str | None = None) -> LoadReport:
    """Load a discriminator's own state dict into a :class:`Discriminator`.

    ``source`` (file or mapping) holds the original discriminator's keys (``fc.conv.*``,
    ``pred.*``, ``cls_3.*`` for the patch classifier, ``cls.*``), the same with the ``dis.``
    prefix of a full checkpoint, or the project's (``shared.*``, ...). The checks and the
    patch-head start are :func:`load_checkpoint`'s; the report names the keys as in a CaGNet
    model (``discriminator.shared.weight``, ...).
    """
    state, _, name, _ = _read(source, name)
    own = set(discriminator.state_dict())
    if set(state) <= own:
        state = OrderedDict(("discriminator." + k, v) for k, v in state.items())
    elif not all(k.startswith(ORIGINAL_DISCRIMINATOR_PREFIX) for k in state):
        state = OrderedDict((ORIGINAL_DISCRIMINATOR_PREFIX + k, v) for k, v in state.items())
    holder = nn.Module()
    holder.discriminator = discriminator   # the same module: loading into it loads the discriminator
    return load_checkpoint(holder, state, name=name)


def to_original_discriminator_state_dict(discriminator: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """A discriminator's state dict with the original's names, without ``dis.`` (``fc.conv.weight``,
    ``pred.*``, ``cls_3.*`` with the patch classifier, ``cls.*``); same tensors, not copies."""
    return OrderedDict((project_to_original_key("discriminator." + k)[len(ORIGINAL_DISCRIMINATOR_PREFIX):], v)
                       for k, v in discriminator.state_dict().items())


# ------------------------------------------------------------------ the label-block PixelCNN
def original_pixelcnn_to_project_key(key: str, num_layers: int = 8) -> str | None:
    """Project key of an original PixelCNN key (``conv3.1.running_var`` ->
    ``layers.2.norm.running_var``, ``b3`` -> ``layers.2.condition_weight``, ``conv9.bias`` ->
    ``output.bias`` with 8 layers); None for the mask buffers ``conv<k>.0.mask`` and unknown keys."""
    m = re.fullmatch(r"conv(\d+)\.0\.weight", key)
    if m and 1 <= int(m[1]) <= num_layers:
        return f"layers.{int(m[1]) - 1}.conv.weight"
    m = re.fullmatch(r"conv(\d+)\.1\." + _PARTS, key)
    if m and 1 <= int(m[1]) <= num_layers:
        return f"layers.{int(m[1]) - 1}.norm.{m[2]}"
    m = re.fullmatch(r"conv(\d+)\.(weight|bias)", key)
    if m and int(m[1]) == num_layers + 1:
        return f"output.{m[2]}"
    m = re.fullmatch(r"b(\d+)", key)
    if m and 1 <= int(m[1]) <= num_layers:
        return f"layers.{int(m[1]) - 1}.condition_weight"
    return None


def project_pixelcnn_to_original_key(key: str, num_layers: int = 8) -> str:
    """Inverse of :func:`original_pixelcnn_to_project_key`; KeyError for ``class_embeddings``
    (not part of the original's network) and unknown keys."""
    m = re.fullmatch(r"layers\.(\d+)\.(conv\.weight|norm\.(.+)|condition_weight)", key)
    if m:
        k = int(m[1]) + 1
        if m[2] == "conv.weight":
            return f"conv{k}.0.weight"
        return f"b{k}" if m[2] == "condition_weight" else f"conv{k}.1.{m[3]}"
    m = re.fullmatch(r"output\.(weight|bias)", key)
    if m:
        return f"conv{num_layers + 1}.{m[1]}"
    raise KeyError(f"pixelcnn key {key!r} has no counterpart in the original layout")


def load_original_pixelcnn(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *,
                           name: str | None = None) -> LoadReport:
    """Load an original label-block PixelCNN state dict into a
    :class:`~cagnet.models.pixelcnn.LabelBlockPixelCNN` (or a project-layout one).

    Accepted: the original's ``{'epoch', 'state_dict'}`` files or bare state dicts, with or
    without DataParallel's ``module.`` prefix. The original's weights may be stored before
    masking (a fresh net) or masked (after a forward): the model masks in its forward, so both
    give the same network. Mask buffers in the file (``conv<k>.0.mask``) must be the model's
    masks; they are not stored. The original keeps the word-embedding table outside the
    network, so an original file leaves ``class_embeddings`` as it is (report:
    ``left_initialised``; fill it with ``set_class_embeddings``). Any other mismatch (a
    conditioned file into an unconditioned model or back, other widths) raises
    :class:`CheckpointError` naming the keys, with the model unchanged.
    """
    state, _, name, _ = _read(source, name)
    target = model.state_dict()
    num_layers = len(model.layers)
    problems: list[str] = []
    if set(state) <= set(target):
        layout, mapped, unexpected = "project", OrderedDict(state), []
    else:
        layout, mapped, unexpected = "original", OrderedDict(), []
        for key, value in state.items():
            mask = re.fullmatch(r"conv(\d+)\.0\.mask", key)
            if mask and 1 <= int(mask[1]) <= num_layers:
                expected = model.layers[int(mask[1]) - 1].conv.mask
                if value.shape[-2:] != expected.shape or not torch.equal(
                        value.float(), expected.expand_as(value).to(value.device)):
                    problems.append(f"{key} is not the model's mask {model.layers[int(mask[1]) - 1].conv.mask_type}")
                continue
            project_key = original_pixelcnn_to_project_key(key, num_layers)
            if project_key is None or project_key not in target:
                unexpected.append(key)
            else:
                mapped[project_key] = value

    def shown(key: str) -> str:
        return key if layout == "project" else project_pixelcnn_to_original_key(key, num_layers)

    optional = ("class_embeddings",) if layout == "original" else ()
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    required = [k for k in missing if k not in optional]
    mismatched = [f"{shown(k)} file {list(v.shape)} vs model {list(target[k].shape)}"
                  for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if required:
        problems.append(f"missing keys: {_listing([shown(k) for k in required])}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"pixelcnn checkpoint {name} ({layout} layout) does not match the model: "
                              + "; ".join(problems))
    model.load_state_dict(mapped, strict=False)
    return LoadReport(source=name, layout=layout, loaded=list(mapped),
                      left_initialised=[k for k in missing if k in optional])


def to_original_pixelcnn_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The PixelCNN's state dict in the original layout, as its ``net.state_dict()`` after a
    forward: masked conv weights and the ``conv<k>.0.mask`` buffers ([out, in, k, k], ones and
    zeros), no ``class_embeddings`` (the original's table is not part of the network). New
    tensors (masked copies), ``module.``-free."""
    num_layers = len(model.layers)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in model.state_dict().items():
        if key == "class_embeddings":
            continue
        m = re.fullmatch(r"layers\.(\d+)\.conv\.weight", key)
        if m:
            mask = model.layers[int(m[1])].conv.mask
            original_key = project_pixelcnn_to_original_key(key, num_layers)
            out[original_key] = (value * mask).detach().clone()
            out[original_key.replace(".weight", ".mask")] = mask.expand_as(value).clone()
        else:
            out[project_pixelcnn_to_original_key(key, num_layers)] = value.detach().clone()
    return out
