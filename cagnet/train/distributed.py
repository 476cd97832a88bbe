"""Processes, devices and DistributedDataParallel wrapping for training.

One code path for one CPU process, one GPU, several GPUs and several nodes: launched with
``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) every process joins a process group (NCCL on CUDA, gloo on CPU), takes
``cuda:LOCAL_RANK`` (or the CPU), trains on its shard of every epoch, and only rank 0
writes logs, figures and checkpoints.

How CaGNet's parts are wrapped (see :func:`wrap_parts`): a training iteration calls three
networks - the feature extractor (backbone + ASPP + contextual module), the generator and
the discriminator - and each of them is trained by its own loss with its own optimiser.
Each of the three is its own ``DistributedDataParallel`` module, and the training step
(:mod:`cagnet.train.steps`) is arranged so that DDP's assumptions hold:

* every DDP module runs exactly one forward per backward (the discriminator's several
  inputs are concatenated pixel-wise into one call), and one backward of the summed
  losses serves all three optimisers;
* each loss reaches only the parameters it trains (the backbone's and generator's terms
  see the discriminator through detached weights), so every gradient is the one that
  module's optimiser must apply, averaged over processes by DDP;
* every output of a DDP forward that carries parameters enters the loss (a zero-weighted
  term where a schedule does not use it), so all parameters get a gradient every
  iteration and ``find_unused_parameters`` (which does not combine with several forwards
  per backward) is not needed;
* a network that does not train in an iteration runs under ``torch.no_grad()``, which
  DDP skips.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cagnet.errors import ConfigError


@dataclass
class DistContext:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    #: in a process group (launched by torchrun, even as its only process)
    grouped: bool = False
    #: a gloo group for small host-side agreements (e.g. "skip this batch?") when the default
    #: group is NCCL: CPU tensors there need no wait for the GPU
    cpu_group: Any = None

    @property
    def enabled(self) -> bool:
        """Whether the run is distributed: DDP wrappers, collectives. One process started by
        ``torchrun --nproc_per_node 1`` is, and runs the same code as several."""
        return self.grouped or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; explicit names as given."""
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device: {spec!r} requested but CUDA is not available")
        return torch.device(f"cuda:{local_rank}") if spec == "cuda" else torch.device(spec)
    return torch.device(spec)


def setup_distributed(device_spec: str = "auto", backend: str = "auto") -> DistContext:
    """Join the process group described by the environment (torchrun), or run alone.

    Under torchrun (``WORLD_SIZE`` and ``MASTER_ADDR`` set) a process joins the group even when
    it is the only one, so that one process exercises the distributed code path (NCCL on a
    GPU). An already initialised default group (e.g. a test that set it up) is used as is and
    left to its owner.
    """
    already = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if already else int(os.environ.get("WORLD_SIZE", "1"))
    launched = already or world_size > 1 or ("WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if not launched:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not already:
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"backend": chosen}
        if device.type == "cuda" and chosen == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
    cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=device, owns_group=owns, grouped=True, cpu_group=cpu_group)


def teardown_distributed(ctx: DistContext) -> None:
    if not dist.is_initialized():
        return
    if ctx.owns_group:
        dist.destroy_process_group()   # every group, the gloo one too
    elif ctx.cpu_group is not None:
        dist.destroy_process_group(ctx.cpu_group)


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean over processes (in place on a copy); identity when alone."""
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / ctx.world_size


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is True on any process (host-side: over gloo, without waiting for a GPU)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=ctx.cpu_group)
    return bool(value.item() > 0)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


class FeatureExtractor(nn.Module):
    """Backbone (with its output normalisation) + contextual module of a :class:`~cagnet.models.CaGNet` as one module whose
    ``forward`` is :meth:`CaGNet.extract` (image, labelled mask, multi_scale) -> ContextOutput.

    It shares (does not copy) the model's submodules, so a DDP wrapper of it covers exactly
    the backbone's and contextual module's parameters.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.semantic_norm = model.semantic_norm
        self.context = model.context
        self.config = model.config

    # CaGNet's own methods, run on this object: they only use .backbone, .semantic_norm,
    # .context and .config
    def _single_scale(self, image):  # noqa: D401 - same as CaGNet._single_scale
        from cagnet.models.cagnet import CaGNet

        return CaGNet._single_scale(self, image)

    def forward(self, image, labelled_mask=None, multi_scale=True):
        from cagnet.models.cagnet import CaGNet

        return CaGNet.extract(self, image, labelled_mask, multi_scale)


@dataclass
class TrainedParts:
    """The callables a training step uses; DDP wrappers when distributed, else the modules.

    ``model``: the plain CaGNet (embeddings, state dict, detached-weight discriminator calls).
    ``features``: (image, labelled mask, multi_scale) -> ContextOutput.
    ``generator``: condition [N, E+C, h, w] -> fake feature.
    ``discriminator``: feature [N, C, h, w] -> (real/fake score, class logits).
    """

    model: nn.Module
    features: nn.Module
    generator: nn.Module
    discriminator: nn.Module


def _has_trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def wrap_parts(model: nn.Module, ctx: DistContext, train_backbone: bool) -> TrainedParts:
    """The model's three trained networks, each in its own DistributedDataParallel when
    distributed (see the module docstring). A frozen backbone is not wrapped."""
    features: nn.Module = FeatureExtractor(model)
    generator: nn.Module = model.generator
    discriminator: nn.Module = model.discriminator
    if ctx.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None

        def ddp(module: nn.Module) -> nn.Module:
            # default buffer handling: rank 0's buffers (batch-norm statistics) are sent to
            # every process before each forward
            return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

        if train_backbone and _has_trainable(features):
            features = ddp(features)
        generator = ddp(generator)
        discriminator = ddp(discriminator)
    return TrainedParts(model=model, features=features, generator=generator, discriminator=discriminator)


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers to every process.

    With trainable batch norm each process updates its running statistics from its own
    batch after DDP's pre-forward broadcast; before evaluating or saving, all processes
    take rank 0's, so that they hold identical models.
    """
    if not ctx.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)
