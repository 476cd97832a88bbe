"""The training configuration: its schema (:class:`TrainConfig`: data, model, optim, losses,
schedules, runtime, pretrain, patches), its checks, the packaged configurations and their loader
:func:`load_train_config` (a packaged config by name, or a YAML file, plus ``key=value``
overrides). Building dataclasses from YAML, with errors that name the key, is
:mod:`cagnet.config_io`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from cagnet.config_io import apply_overrides, from_dict, read_yaml
from cagnet.errors import ConfigError
from cagnet.models.cagnet import ModelConfig

#: Training schedules, in the order the original runs them.
SCHEDULE_NAMES: tuple[str, ...] = ("step1", "mixed", "st", "st_mixed")
#: Packaged configurations (``cagnet/configs/<name>.yaml``); ``*_pa3``: CaGNetv2's patch-wise recipe
#: (``model.patch_size: 3``, patch-wise step 2).
PACKAGED_CONFIGS: tuple[str, ...] = ("tutorial", "voc12", "context", "cocostuff",
                                     "tutorial_pa3", "voc12_pa3", "context_pa3", "cocostuff_pa3")


def _positive(where: str, value: Any, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass
class DataConfig:
    """Dataset and loading.

    ``root`` is a dataset folder in the original layout (None = the embedded synthetic
    benchmark at :func:`cagnet.data.default_data_root`). With ``synthetic`` set (a mapping of
    :class:`cagnet.data.SyntheticConfig` fields, ``{}`` = its defaults; ``{appearance: scene}``
    lights every scene, and the pretraining scenes with it) the embedded benchmark
    is built at ``root`` first, or reused when an identical one is there; a ``root`` holding
    another dataset (a ``labels_refined.txt`` without the benchmark's ``benchmark.json``) is
    read as it is (:func:`cagnet.train.loading.builds_synthetic`).
    ``test_size``: side of the square the test images are warped to (513 in the original;
    None = each image's own size). ``train_limit`` / ``test_limit``: use only the first N
    images of a split (quick runs). ``eval_split``: the split the training engine scores
    periodically and at the end of a run: ``validation`` (so that choices made from those
    scores never look at the test split), ``test`` (the original, whose datasets have no
    validation split) or ``auto`` (validation when the dataset has one, else test).
    ``preload``: decode the training split once and keep its
    images on the training device, augmenting batches there (true); read and augment them in
    ``num_workers`` DataLoader processes (false); null = preload when the decoded images take
    at most 1 GiB (:data:`cagnet.train.batches.PRELOAD_LIMIT_BYTES`). The batches are the same.
    """

    root: str | None = None
    synthetic: dict[str, Any] | None = None
    embedding: Literal["auto", "fastnvec", "fasttext", "word2vec", "glove"] = "auto"
    normalize_embeddings: bool = True
    normalization: Literal["caffe", "imagenet"] = "caffe"
    crop_size: int = 368
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    test_size: int | None = 513
    batch_size: int = 8
    test_batch_size: int = 1
    num_workers: int = 0
    preload: bool | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    eval_split: Literal["auto", "validation", "test"] = "test"

    def validate(self) -> None:
        for name in ("crop_size", "batch_size", "test_batch_size", "test_size", "train_limit", "test_limit"):
            _positive(f"data.{name}", getattr(self, name))
        _positive("data.num_workers", self.num_workers, allow_zero=True)
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"data.scale_range: needs 0 < low <= high, got {list(self.scale_range)}")
        if self.synthetic is not None:
            from cagnet.data.synthetic import SyntheticConfig

            try:
                SyntheticConfig.from_dict(dict(self.synthetic))
            except (ConfigError, TypeError) as err:
                raise ConfigError(f"data.synthetic: {err}") from None


@dataclass
class LrMultipliers:
    """Learning-rate multipliers of the backbone optimiser's parameter groups (DeepLabV2 recipe).

    ``context_gates`` is the contextual module's gate conv, which the original leaves out of
    every optimiser (see :class:`OptimConfig`).
    """

    backbone: float = 1.0
    context: float = 5.0
    context_gates: float = 5.0
    aspp_weight: float = 10.0
    aspp_bias: float = 20.0


@dataclass
class OptimConfig:
    """Optimiser settings shared by every schedule (the learning rates are per schedule).

    Backbone + ASPP + contextual module: SGD with momentum (``backbone_optimizer: adam``, which
    the original also offers, uses Adam with the same groups), one parameter group per
    multiplier of :class:`LrMultipliers`, ASPP biases without weight decay, poly decay.
    Generator and discriminator: Adam (L2 weight decay as in ``torch.optim.Adam``).
    ``train_context_gates``: the original's parameter selection never trains the gate conv
    of the contextual module (it keeps its initial values); True trains it with the
    contextual convs (5x), False reproduces the original.
    """

    backbone_optimizer: Literal["sgd", "adam"] = "sgd"
    backbone_momentum: float = 0.9
    backbone_weight_decay: float = 5e-4
    aspp_bias_weight_decay: float = 0.0
    lr_multipliers: LrMultipliers = field(default_factory=LrMultipliers)
    poly_power: float = 0.9
    generator_weight_decay: float = 0.0
    discriminator_weight_decay: float = 5e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    train_context_gates: bool = True

    def validate(self) -> None:
        for name in ("backbone_momentum", "backbone_weight_decay", "aspp_bias_weight_decay", "poly_power",
                     "generator_weight_decay", "discriminator_weight_decay"):
            _positive(f"optim.{name}", getattr(self, name), allow_zero=True)
        for name in ("backbone", "context", "context_gates", "aspp_weight", "aspp_bias"):
            _positive(f"optim.lr_multipliers.{name}", getattr(self.lr_multipliers, name), allow_zero=True)
        for beta in self.adam_betas:
            if not 0 <= beta < 1:
                raise ConfigError(f"optim.adam_betas: each must be in [0, 1), got {list(self.adam_betas)}")


@dataclass
class LossConfig:
    """Loss kinds shared by every schedule (the weights are per schedule).

    ``gan_type``: ``lsgan`` is what the original's config value computes (an L1 distance of
    the sigmoid score to 0/1), ``ls`` the squared distance, ``gan`` binary cross-entropy.
    """

    gan_type: Literal["lsgan", "ls", "gan"] = "lsgan"
    mmd_bandwidths: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 40.0, 60.0)

    def validate(self) -> None:
        if not self.mmd_bandwidths or min(self.mmd_bandwidths) <= 0:
            raise ConfigError(f"losses.mmd_bandwidths: needs positive values, got {list(self.mmd_bandwidths)}")


@dataclass
class LossWeights:
    """Loss coefficients of one schedule (the original's names; defaults = its step-1 values).

    Backbone: ``lambda_B_KLD * KL + lambda_B_cls * cls(real)``. Discriminator (step 1):
    ``GAN(real, fake) + lambda_D_cls_real * cls(real) + lambda_D_cls_fake * cls(fake)``;
    (step 2): ``lambda_D_cls_fake_transfer * cls(fake)``. Generator (step 1):
    ``lambda_G_GAN * GAN + lambda_G_Content * MMD + lambda_G_cls * cls(fake)``; (step 2):
    ``lambda_G_cls_transfer * cls(fake)``.
    """

    lambda_B_KLD: float = 100.0
    lambda_B_cls: float = 0.5
    lambda_D_cls_real: float = 1.0
    lambda_D_cls_fake: float = 0.0
    lambda_D_cls_fake_transfer: float = 0.0
    lambda_G_GAN: float = 1.0
    lambda_G_Content: float = 50.0
    lambda_G_cls: float = 0.0
    lambda_G_cls_transfer: float = 0.0

    def check(self, prefix: str) -> None:
        for f in dataclasses.fields(self):
            _positive(f"{prefix}.{f.name}", getattr(self, f.name), allow_zero=True)


@dataclass
class StepDecay:
    """The original's ``lambda`` policy: factor 1 before ``start_decay_iter``, then
    ``gamma ** ((iteration - start_decay_iter) // step_size + 1)``."""

    start_decay_iter: int = 10000
    step_size: int = 5000
    gamma: float = 0.71

    def check(self, prefix: str) -> None:
        _positive(f"{prefix}.start_decay_iter", self.start_decay_iter, allow_zero=True)
        _positive(f"{prefix}.step_size", self.step_size)
        _positive(f"{prefix}.gamma", self.gamma)


@dataclass
class ScheduleConfig:
    """One training schedule (one of the original's config files).

    ``iterations``: ITER_MAX of the schedule. ``update_backbone``: ``update_back: t`` (the
    backbone trains in step 1) or ``f`` (frozen). Learning rates of the backbone (SGD, poly
    decay updated every ``backbone_poly_every`` iterations), generator and discriminator
    (Adam, :class:`StepDecay`). ``mixed``/``st_mixed`` alternate ``interval_step1`` step-1
    and ``interval_step2`` step-2 iterations starting with ``first``; step 2 draws labels
    from the prior with ``gen_unseen_rate`` extra weight per unseen class. ``top_p``: the
    self-training label rule (``st``). Initial weights: ``init_model`` (a checkpoint path)
    or ``init_from`` (the final checkpoint of that schedule in the sibling run folder);
    ``--init-model`` overrides both. ``batch_size`` / ``crop_size`` override ``data``.
    ``st_unseen_embedding``: the generator's word embedding of a pixel pseudo-labelled with
    an unseen class in ``st``: ``zero`` (the original: its seen-class table has zero rows
    there) or ``word`` (the class's word embedding).

    Patch-wise step 2 (``model.patch_size`` > 1, CaGNetv2): ``block_source`` says where its
    label blocks come from: ``pure`` (uniform one-class blocks whose class is drawn from the
    step-2 prior; no PixelCNN needed) or ``bank`` (the blocks of the file ``bank_path``, a
    tensor ``[B, s, s]`` of class indices, :func:`cagnet.data.blocks.load_label_blocks`, mixed
    with ``fuse_ratio`` pure blocks per bank block, the original's default 8); see
    :class:`cagnet.data.blocks.BlockSource`. A relative ``bank_path`` is read from the working
    directory, as ``data.root``.
    """

    iterations: int
    update_backbone: bool = True
    backbone_lr: float = 2.5e-4
    generator_lr: float = 2e-4
    discriminator_lr: float = 2.5e-4
    backbone_poly_every: int = 10
    generator_decay: StepDecay = field(default_factory=StepDecay)
    discriminator_decay: StepDecay = field(default_factory=StepDecay)
    losses: LossWeights = field(default_factory=LossWeights)
    interval_step1: int = 100
    interval_step2: int = 100
    first: Literal["step1", "step2"] = "step1"
    gen_unseen_rate: float = 0.0
    top_p: int = 1
    init_from: Literal["step1", "mixed", "st", "st_mixed"] | None = None
    init_model: str | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    st_unseen_embedding: Literal["zero", "word"] = "zero"
    block_source: Literal["pure", "bank"] = "pure"
    bank_path: str | None = None
    fuse_ratio: int = 8

    def check(self, prefix: str) -> None:
        """Value checks; ``prefix`` names the section in messages (``schedules.step1``)."""
        for name in ("iterations", "backbone_poly_every", "interval_step1", "interval_step2", "top_p",
                     "batch_size", "crop_size"):
            _positive(f"{prefix}.{name}", getattr(self, name))
        _positive(f"{prefix}.fuse_ratio", self.fuse_ratio, allow_zero=True)
        for name in ("backbone_lr", "generator_lr", "discriminator_lr", "gen_unseen_rate"):
            _positive(f"{prefix}.{name}", getattr(self, name), allow_zero=True)
        self.generator_decay.check(f"{prefix}.generator_decay")
        self.discriminator_decay.check(f"{prefix}.discriminator_decay")
        self.losses.check(f"{prefix}.losses")


@dataclass
class SchedulesConfig:
    """The schedules a config defines; ``train --schedule NAME`` needs its section."""

    step1: ScheduleConfig | None = None
    mixed: ScheduleConfig | None = None
    st: ScheduleConfig | None = None
    st_mixed: ScheduleConfig | None = None


@dataclass
class RuntimeConfig:
    """Where and how training runs.

    ``device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``
    (under torchrun each process takes ``cuda:LOCAL_RANK``). ``amp``: autocast dtype of the
    networks' forward passes (``fp16`` only on CUDA, with a gradient scaler); losses, MMD and
    KL stay float32. ``channels_last``: NHWC memory layout of the model and images (None = on
    for CUDA, off on CPU). ``cudnn_benchmark``: let cuDNN time and pick its convolution
    algorithms (None = on for CUDA). ``compile``: ``torch.compile`` the three networks
    (backbone + contextual module, generator, discriminator); the first iterations then
    take longer. Intervals are in iterations (0 = only at the end): ``log_interval`` (console
    summary, and the check of the losses for non-finite values: the only point where the
    host waits for the device; every iteration is still written to ``log.jsonl``),
    ``eval_interval`` (GZSL scores of ``eval_images`` test images, None = all, and figures),
    ``checkpoint_interval``. ``num_threads``: torch CPU threads (None = torch's default).
    """

    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    compile: bool = False
    seed: int = 0
    log_interval: int = 50
    eval_interval: int = 0
    eval_images: int | None = None
    checkpoint_interval: int = 1000
    sample_images: int = 4
    num_threads: int | None = None
    progress: bool = True
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"

    def validate(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"runtime.device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("log_interval", "eval_interval", "checkpoint_interval", "sample_images"):
            _positive(f"runtime.{name}", getattr(self, name), allow_zero=True)
        _positive("runtime.eval_images", self.eval_images)
        _positive("runtime.num_threads", self.num_threads)


@dataclass
class PretrainConfig:
    """Backbone pretraining on generated textures (:mod:`cagnet.pretrain`), the embedded
    benchmark's stand-in for ImageNet: ``iterations`` of Adam at ``lr`` (poly decay) on
    ``batch_size`` scenes of ``image_size`` px from a set of ``num_images``
    (:mod:`cagnet.data.pretraining`), generated from ``seed``. The trained ResNet body is
    cached in ``cache_dir`` (None = ``data/pretrained`` of the project) under a name that
    depends on these values and the backbone's shape, and a schedule's ``init_model:
    pretrained`` starts from it.
    """

    iterations: int = 3000
    batch_size: int = 8
    lr: float = 0.006
    num_images: int = 800
    image_size: int = 128
    seed: int = 0
    cache_dir: str | None = None

    def validate(self) -> None:
        for name in ("iterations", "batch_size", "lr", "num_images", "image_size"):
            _positive(f"pretrain.{name}", getattr(self, name))
        _positive("pretrain.seed", self.seed, allow_zero=True)


@dataclass
class PatchesConfig:
    """CaGNetv2's bank of label blocks (:mod:`cagnet.patches`, ``python -m cagnet patches``);
    the defaults are the tutorial's (under a minute on one CPU thread), the ``*_pa3`` configs of
    the real datasets give the original's values.

    Training data: ``crops_per_image`` training crops per image, drawn as training draws them
    (``data.scale_range``, flip) at the crop of ``schedule`` (the step-2 schedule the bank is
    for), their labels (unseen classes ignored) resized to its feature grid as step 1 resizes
    them, cut into blocks of ``model.patch_size``. The label-block PixelCNN
    (:class:`cagnet.models.LabelBlockPixelCNN`: ``width``, ``num_layers``, ``kernel_size``,
    ``dropout``, ``condition_init``) learns them for ``epochs`` epochs of Adam at ``lr``, each
    batch the blocks of ``batch_size`` label maps (the original's batch 6). ``condition``:
    ``block_class`` (the block's most frequent class on every position, the form sampling gives)
    or ``leaking`` (each position's own label: the original's training form, for the ablation).

    Sampling, the original's rules: ``blocks_per_iteration`` blocks per iteration, each with an
    unseen class u (uniform) as condition and on its first ``first_unseen`` raster positions;
    each later position draws from the softmax of its logits, plus ``p_base / (S+U)`` on the
    unseen classes, restricted to the ``topk`` fraction of the classes with the largest
    probabilities, renormalised by a second softmax (``second_softmax: true``, the original) or
    by their sum. Kept: blocks with at least ``threshold`` unseen pixels and at most ``cc_max``
    classes. With probability ``pure_iteration_share`` (the original's ``flag``; its -1 = 0, never)
    an iteration emits uniform blocks instead, one class each from the step-2 prior of
    ``gen_unseen_rate`` (None = the ``schedule``'s). Sampling stops at ``num_blocks`` kept blocks;
    ``max_iterations`` is an error instead. Everything draws from ``seed``. The bank is cached in
    ``cache_dir`` (None = ``data/label_blocks`` of the project) under a name that depends on all of
    these values and the dataset.
    """

    schedule: Literal["mixed", "st_mixed"] = "mixed"
    crops_per_image: int = 1
    width: int = 32
    num_layers: int = 4
    kernel_size: int = 7
    dropout: float = 0.5
    condition: Literal["block_class", "leaking"] = "block_class"
    condition_init: Literal["linear", "zeros"] = "linear"
    epochs: int = 4
    batch_size: int = 8
    lr: float = 0.002
    first_unseen: int = 5
    threshold: int = 7
    cc_max: int = 3
    topk: float = 1.0
    p_base: float = 0.0
    second_softmax: bool = True
    pure_iteration_share: float = 0.1
    gen_unseen_rate: float | None = None
    num_blocks: int = 4096
    blocks_per_iteration: int = 512
    max_iterations: int = 200
    seed: int = 0
    cache_dir: str | None = None

    def validate(self) -> None:
        for name in ("crops_per_image", "width", "num_layers", "kernel_size", "epochs", "batch_size", "lr",
                     "cc_max", "num_blocks", "blocks_per_iteration", "max_iterations"):
            _positive(f"patches.{name}", getattr(self, name))
        for name in ("first_unseen", "threshold", "p_base", "seed", "gen_unseen_rate"):
            _positive(f"patches.{name}", getattr(self, name), allow_zero=True)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"patches.kernel_size: must be odd (a masked convolution has a centre), "
                              f"got {self.kernel_size}")
        for name, inside, bounds in (("dropout", 0 <= self.dropout < 1, "[0, 1)"),
                                     ("topk", 0 < self.topk <= 1, "(0, 1]: a fraction of the classes"),
                                     ("pure_iteration_share", 0 <= self.pure_iteration_share <= 1, "[0, 1]")):
            if not inside:
                raise ConfigError(f"patches.{name}: must be in {bounds}, got {getattr(self, name)!r}")


@dataclass
class TrainConfig:
    """A complete training configuration (see the packaged ``cagnet/configs/*.yaml``).

    ``model`` is a :class:`cagnet.models.ModelConfig`; in YAML a ``preset`` key names the
    base preset (``tiny``, ``original_voc12``, ...) and the other keys override its fields.
    The class counts and embedding size follow the dataset when the model is built.
    ``pretrain`` (optional) describes how to pretrain the backbone when no pretrained weights
    exist (the embedded benchmark's ``tutorial``). ``patches`` (optional, patch-wise configs)
    describes how to make the bank of label blocks of CaGNetv2's step 2 (:class:`PatchesConfig`).
    """

    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    pretrain: PretrainConfig | None = None
    patches: PatchesConfig | None = None

    def validate(self) -> None:
        for name in SCHEDULE_NAMES:
            section = getattr(self.schedules, name)
            if section is not None:
                section.check(f"schedules.{name}")
        check_unread_schedule_keys(self)

    def schedule(self, name: str) -> ScheduleConfig:
        """The section of schedule ``name``; ConfigError when unknown or absent."""
        if name not in SCHEDULE_NAMES:
            raise ConfigError(f"unknown schedule {name!r} (expected one of {', '.join(SCHEDULE_NAMES)})")
        section = getattr(self.schedules, name)
        if section is None:
            defined = [n for n in SCHEDULE_NAMES if getattr(self.schedules, n) is not None]
            raise ConfigError(f"config {self.name!r} has no schedules.{name} section "
                              f"(it defines: {', '.join(defined) or 'none'})")
        return section


#: Keys of a schedule section that only some schedules read, and those schedules: ``mixed`` and
#: ``st_mixed`` alternate step-1 and step-2 iterations (the step-2 label prior and loss weights),
#: ``st`` pseudo-labels ignored pixels; in any other schedule such a key is ignored.
SCHEDULE_KEYS_READ_BY: dict[str, tuple[str, ...]] = {
    "interval_step1": ("mixed", "st_mixed"),
    "interval_step2": ("mixed", "st_mixed"),
    "first": ("mixed", "st_mixed"),
    "gen_unseen_rate": ("mixed", "st_mixed"),
    "losses.lambda_D_cls_fake_transfer": ("mixed", "st_mixed"),
    "losses.lambda_G_cls_transfer": ("mixed", "st_mixed"),
    "top_p": ("st",),
    "st_unseen_embedding": ("st",),
    "block_source": ("mixed", "st_mixed"),
    "bank_path": ("mixed", "st_mixed"),
    "fuse_ratio": ("mixed", "st_mixed"),
}
#: The keys of patch-wise step 2 (read only when ``model.patch_size`` > 1).
BLOCK_SOURCE_KEYS: tuple[str, ...] = ("block_source", "bank_path", "fuse_ratio")


def unread_schedule_keys(config: TrainConfig) -> list[str]:
    """One line per schedule key that its schedule does not read but that differs from the
    default (so it would be ignored): the key, its value and the schedules that read it
    (:data:`SCHEDULE_KEYS_READ_BY`). A key left at its default is never reported."""
    defaults = ScheduleConfig(iterations=1)
    found = []
    for name in SCHEDULE_NAMES:
        section = getattr(config.schedules, name)
        if section is None:
            continue
        for key, readers in SCHEDULE_KEYS_READ_BY.items():
            if name in readers:
                continue
            value, default = section, defaults
            for part in key.split("."):
                value, default = getattr(value, part), getattr(default, part)
            if value != default:
                found.append(f"schedules.{name}.{key}: {value!r} would be ignored: only "
                             f"{' and '.join(readers)} read{'s' if len(readers) == 1 else ''} it (remove it)")
    return found


def check_unread_schedule_keys(config: TrainConfig) -> None:
    """A :class:`ConfigError` naming the first key of :func:`unread_schedule_keys`, if any."""
    found = unread_schedule_keys(config)
    if found:
        raise ConfigError(found[0])


def check_block_source_keys(config: TrainConfig) -> None:
    """A one-line :class:`ConfigError` for block-source keys that would be ignored or that miss
    their file: any of them off its default with a pixel-wise model (``model.patch_size`` 1,
    whose step 2 draws one label per pixel), ``bank_path`` / ``fuse_ratio`` with
    ``block_source: pure``, ``block_source: bank`` without ``bank_path`` and without a
    ``patches`` section (with one, ``bank_path: null`` is the config's own cached bank,
    :func:`cagnet.patches.ensure_bank`)."""
    defaults = ScheduleConfig(iterations=1)
    for name in SCHEDULE_KEYS_READ_BY["block_source"]:
        section = getattr(config.schedules, name)
        if section is None:
            continue
        prefix = f"schedules.{name}"
        if config.model.patch_size == 1:
            for key in BLOCK_SOURCE_KEYS:
                if getattr(section, key) != getattr(defaults, key):
                    raise ConfigError(f"{prefix}.{key}: {getattr(section, key)!r} would be ignored: model.patch_size "
                                      "is 1 (pixel-wise step 2 draws one label per pixel; set model.patch_size: 3 "
                                      "or remove it)")
            continue
        if section.block_source == "bank" and section.bank_path is None and config.patches is None:
            raise ConfigError(f"{prefix}.bank_path: needed with block_source: bank (a .pt / .npy file of label "
                              "blocks [B, s, s]; 'python -m cagnet patches --config NAME' makes the config's bank "
                              "and prints its path; or block_source: pure)")
        if section.block_source == "pure":
            for key in ("bank_path", "fuse_ratio"):
                if getattr(section, key) != getattr(defaults, key):
                    raise ConfigError(f"{prefix}.{key}: {getattr(section, key)!r} would be ignored: block_source is "
                                      "pure (set block_source: bank or remove it)")


def train_config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """:class:`TrainConfig` from plain data; the ``model`` mapping may name a ``preset``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"training config: expected a mapping, got {type(data).__name__}")
    data = dict(data)
    model_data = data.pop("model", None)
    config = from_dict(TrainConfig, data)
    if model_data is not None:
        if not isinstance(model_data, Mapping):
            raise ConfigError(f"model: expected a mapping, got {model_data!r}")
        try:
            model = ModelConfig.from_dict(model_data)
        except TypeError as err:  # a value of a type ModelConfig cannot even compare
            raise ConfigError(f"model: {err}") from None
        config = dataclasses.replace(config, model=model)
    check_block_source_keys(config)   # reads model.patch_size: after the model section is built
    return config


def packaged_config_path(name: str) -> Path:
    """Path of the packaged config ``name`` (``cagnet/configs/<name>.yaml``)."""
    return Path(__file__).resolve().parent / "configs" / f"{name}.yaml"


def resolve_config_source(source: str | Path) -> tuple[Path, str]:
    """(YAML path, config name) of ``--config NAME|PATH``.

    A packaged name (``tutorial``, ``voc12``, ...) wins over a same-named file in the working
    directory only when it has no suffix; anything with a path separator or a ``.yaml`` /
    ``.yml`` suffix is a file.
    """
    text = str(source)
    looks_like_path = Path(text).suffix in (".yaml", ".yml") or "/" in text or "\\" in text
    if not looks_like_path:
        path = packaged_config_path(text)
        if path.is_file():
            return path, text
        raise ConfigError(f"unknown config {text!r}: not a packaged config "
                          f"({', '.join(PACKAGED_CONFIGS)}) nor a .yaml file")
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path, path.stem


def load_train_config(source: str | Path | Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()
                      ) -> TrainConfig:
    """Load and validate a training config: a packaged name, a YAML path or plain data.

    ``overrides`` are ``key.sub=value`` strings (``schedules.step1.iterations=200``) applied
    before validation, so a misspelt key is an error naming it. ``name`` defaults to the
    file's stem.
    """
    if isinstance(source, Mapping):
        data, default_name = dict(source), "custom"
    else:
        path, default_name = resolve_config_source(source)
        data = read_yaml(path)
    data.setdefault("name", default_name)
    apply_overrides(data, list(overrides))
    return train_config_from_dict(data)


__all__ = ["SCHEDULE_NAMES", "PACKAGED_CONFIGS", "DataConfig", "LrMultipliers", "OptimConfig", "LossConfig",
           "LossWeights", "StepDecay", "ScheduleConfig", "SchedulesConfig", "RuntimeConfig", "PretrainConfig",
           "PatchesConfig", "TrainConfig", "train_config_from_dict", "packaged_config_path", "resolve_config_source",
           "load_train_config", "SCHEDULE_KEYS_READ_BY", "unread_schedule_keys", "check_unread_schedule_keys",
           "BLOCK_SOURCE_KEYS", "check_block_source_keys", "apply_overrides"]
