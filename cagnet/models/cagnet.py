"""The full CaGNet model: backbone + contextual module + generator + discriminator.

Figure of the paper, as the code runs it (C = feature dim, E = embedding dim, S/U = seen/unseen
class counts, h x w = the output-stride-8 grid of the H x W input)::

    image [N,3,H,W]   (+ copies resized to 0.5 and 0.75 for the multi-scale pass)
        |  backbone: DeepLabV2 ResNet + ASPP
        v
    semantic feature h [N,C,h,w]
        |  contextual module
        v
    mu, logvar [N,C,h,w] ---------------------> KL term over the labelled pixels
        |  mu + eps * exp(logvar / 2) (train), mu (eval)
        v
    contextual latent z [N,C,h,w] ---------------------+
        |                                              |   word embedding of each pixel's class [N,E,h,w]
        v                                              v                 |
    real feature x = sigmoid(h + h * sigmoid(z))    generator([embedding ; z]) -> fake feature [N,C,h,w]
        |                                                                    |
        +------------------------> discriminator <---------------------------+
                 classifier logits [N,S+U+1,h,w], real/fake score [N,1,h,w]

API for training and inference code:

* :meth:`CaGNet.extract` (image, labelled mask) -> :class:`ContextOutput` (real feature, latent,
  mu, logvar, KL, per-scale features and their pixel-wise max);
* :meth:`CaGNet.embed_labels` (label map, table) -> per-pixel word embeddings;
* :meth:`CaGNet.generate` (embeddings, latent) -> fake feature;
* :meth:`CaGNet.classify` / :meth:`CaGNet.gan_score` on any feature;
* ``forward(image)`` -> class logits on the feature grid (full-scale pass only, latent = mu in
  eval), as the original predicts at test time.

Ablations of the contextual module (:attr:`ModelConfig.context_latent`,
:attr:`ModelConfig.context_gates`): without the latent (``none``) the contextual module does not
run, the real feature is ``sigmoid(h + h * sigmoid(0))`` and the generator gets N(0, I) noise in
step 1 as in step 2; ``zeroed`` / ``shuffled`` change only what the generator gets in step 1
(:func:`cagnet.models.contextual.generator_latent`); ``context_gates: false`` fuses the dilated
branches without gates.

Configurations are :class:`ModelConfig` dataclasses; :func:`build_cagnet` builds a model from a
preset name (``original``, ``small_reference``, ``tiny``, ...) or a config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cagnet.errors import ConfigError
from cagnet.models.backbone import (ASPP_DILATIONS, BACKBONE_PRESETS, DEFAULT_SCALES, DeepLabV2,
                                    FrozenBatchNorm2d, max_fuse, resize_to_scale)
from cagnet.losses import kl_divergence
from cagnet.models.contextual import (CONTEXT_DILATIONS, CONTEXT_LATENTS, ContextualLatent, ContextualModule,
                                      real_feature, resize_mask)
from cagnet.models.discriminator import PATCH_SIZES, Discriminator
from cagnet.models.generator import GENERATOR_DROPOUTS, GENERATOR_WIDTHS, FeatureGenerator


#: Options of :attr:`ModelConfig.semantic_norm`.
SEMANTIC_NORMS: tuple[str, ...] = ("none", "batch")


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal (fan in) weights and zero biases for every conv of ``module``; BN layers
    reset to weight 1, bias 0 and running statistics 0 / 1 (the original's ``init: kaiming``)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a CaGNet model; flat, typed fields (YAML friendly, see :meth:`from_dict`).

    ``backbone`` names a preset of :data:`cagnet.models.backbone.BACKBONE_PRESETS`;
    ``backbone_blocks`` / ``base_width`` left as None take the preset's values.
    ``semantic_norm``: ``none`` (the original) feeds the ASPP output h to the contextual module
    and the real feature as it is; ``batch`` first normalises it per channel with batch norm
    (trainable or frozen like the backbone's), which keeps ``sigmoid(h + h * sigmoid(z))`` out
    of saturation when a small backbone trains with Adam (a departure from the original).
    The classifier has ``num_seen + num_unseen + 1`` outputs; ``seen_table_rows`` is the row
    count of the seen-class embedding table (the original pads it to ignore index + 1 = 256 so
    that label 255 looks up a zero row).
    ``patch_size``: 1 = CaGNet's pixel-wise classifier; 3 = CaGNetv2's patch classifier (a 3x3
    conv between the discriminator's shared layer and its class head, see
    :mod:`cagnet.models.discriminator`), used wherever the classifier is.

    ``context_latent`` (ablations of the contextual latent code; :data:`CONTEXT_LATENTS`):
    ``contextual`` is CaGNet. ``none`` is CaGNet without the contextual module's latent code,
    as the paper's ablation replaces the code by random noise: the module does not run (its
    parameters stay in the state dict, frozen at their initial values), mu = logvar = latent = 0,
    so there is no KL term, the real feature is ``sigmoid(h + h * sigmoid(0)) = sigmoid(1.5 h)``
    -- the same function of h that CaGNet computes at the prior's mean code, so the backbone,
    ASPP and classifier see features of the same scale -- and the generator gets ``[embedding ;
    N(0, I) noise per pixel]`` in step 1 as in step 2. ``zeroed``: the generator gets a zero code
    in step 1; ``shuffled``: it gets the contextual code permuted across the labelled pixels of
    the batch (same distribution, no link to the pixel's context); in both the real-feature
    path, the KL term and inference are CaGNet's. Step 2 always feeds N(0, I) noise.
    ``context_gates``: true = the contextual module's gated branch fusion (the context
    selector); false = every gate fixed at 1 (the paper's ablation of the selector). Both are
    model fields rather than step-1 loss options: ``none`` and the gates change the model's own
    forward, inference included, and one key names all four latent variants.
    """

    backbone: str = "deeplabv2_resnet101"
    backbone_blocks: tuple[int, ...] | None = None
    base_width: int | None = None
    freeze_bn: bool = True
    feature_dim: int = 600
    semantic_norm: str = "none"
    aspp_dilations: tuple[int, ...] = ASPP_DILATIONS
    context_width: int = 256
    context_dilations: tuple[int, ...] = CONTEXT_DILATIONS
    embedding_dim: int = 600
    generator_widths: tuple[int, ...] = GENERATOR_WIDTHS
    generator_dropouts: tuple[float, ...] = GENERATOR_DROPOUTS
    discriminator_width: int = 1024
    discriminator_dropout: float = 0.5
    patch_size: int = 1
    context_latent: str = "contextual"
    context_gates: bool = True
    num_seen: int = 15
    num_unseen: int = 5
    seen_table_rows: int = 256
    scales: tuple[float, ...] = DEFAULT_SCALES

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_PRESETS:
            raise ConfigError(f"model.backbone: unknown backbone {self.backbone!r} "
                              f"(known: {', '.join(BACKBONE_PRESETS)})")
        preset_blocks, preset_width = BACKBONE_PRESETS[self.backbone]
        for name in ("backbone_blocks", "aspp_dilations", "context_dilations", "generator_widths",
                     "generator_dropouts", "scales"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(value))
        if self.backbone_blocks is None:
            object.__setattr__(self, "backbone_blocks", preset_blocks)
        if self.base_width is None:
            object.__setattr__(self, "base_width", preset_width)
        self._validate()

    def _validate(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ConfigError(f"model.{name}: {why} (got {getattr(self, name)!r})")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_number(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        for name in ("freeze_bn", "context_gates"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")
        if self.context_latent not in CONTEXT_LATENTS:
            fail("context_latent", f"must be one of {', '.join(CONTEXT_LATENTS)}")
        if self.semantic_norm not in SEMANTIC_NORMS:
            fail("semantic_norm", f"must be one of {', '.join(SEMANTIC_NORMS)}")
        for name in ("backbone_blocks", "aspp_dilations", "context_dilations", "generator_widths"):
            if not isinstance(getattr(self, name), tuple) or not all(is_int(v) for v in getattr(self, name)):
                fail(name, "must be a list of integers")
        for name in ("generator_dropouts", "scales"):
            if not isinstance(getattr(self, name), tuple) or not all(is_number(v) for v in getattr(self, name)):
                fail(name, "must be a list of numbers")
        if not is_number(self.discriminator_dropout):
            fail("discriminator_dropout", "must be a number")
        if not is_int(self.patch_size) or self.patch_size not in PATCH_SIZES:
            fail("patch_size", f"must be one of {', '.join(map(str, PATCH_SIZES))} (an odd patch side: "
                               "1 = pixel-wise classifier, 3 = the 3x3 patch classifier of CaGNetv2)")
        if len(self.backbone_blocks) != 4 or min(self.backbone_blocks) < 1:
            fail("backbone_blocks", "needs 4 positive bottleneck counts (res2..res5)")
        for name in ("base_width", "feature_dim", "context_width", "embedding_dim", "discriminator_width",
                     "num_seen", "seen_table_rows"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "must be a positive integer")
        if not is_int(self.num_unseen) or self.num_unseen < 0:
            fail("num_unseen", "must be an integer >= 0")
        if min(self.generator_widths, default=1) < 1:
            fail("generator_widths", "widths must be positive")
        if self.seen_table_rows < self.num_seen:
            fail("seen_table_rows", f"must be at least num_seen = {self.num_seen}")
        if not self.aspp_dilations or min(self.aspp_dilations) < 1:
            fail("aspp_dilations", "needs at least one positive dilation")
        if not self.context_dilations or min(self.context_dilations) < 1:
            fail("context_dilations", "needs at least one positive dilation")
        if len(self.generator_widths) != len(self.generator_dropouts) or not self.generator_widths:
            fail("generator_dropouts", f"needs one rate per generator width ({len(self.generator_widths)})")
        if any(not 0.0 <= p < 1.0 for p in (*self.generator_dropouts, self.discriminator_dropout)):
            fail("generator_dropouts", "dropout rates must be in [0, 1)")
        if not self.scales or self.scales[0] != 1.0 or any(s <= 0 for s in self.scales):
            fail("scales", "must start with 1.0 (the full-scale pass) and be positive")

    @property
    def num_classes(self) -> int:
        """S + U, the rows of the class embedding table."""
        return self.num_seen + self.num_unseen

    @property
    def num_outputs(self) -> int:
        """Classifier outputs, S + U + 1 (the last one is never a target)."""
        return self.num_classes + 1

    @property
    def generator_input_dim(self) -> int:
        return self.embedding_dim + self.feature_dim

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists for tuples), the inverse of :meth:`from_dict`."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Config from a mapping (e.g. a YAML section); an optional ``preset`` key names the base."""
        values = dict(values)
        preset = values.pop("preset", None)
        return model_config(preset or "original", **values)


MODEL_PRESETS: dict[str, ModelConfig] = {
    # the original CaGNet on PASCAL VOC 2012 (configs/voc12.yaml): ResNet-101, C = 600, E = 600
    "original": ModelConfig(),
    "original_voc12": ModelConfig(),
    "original_context": ModelConfig(num_seen=29, num_unseen=4),
    "original_cocostuff": ModelConfig(num_seen=167, num_unseen=15),
    # the small configuration of manifest_small.json / small_reference.pt
    "small_reference": ModelConfig(backbone="deeplabv2_small", feature_dim=48, embedding_dim=40,
                                   discriminator_width=256),
    # CPU tutorial on the embedded benchmark: 12 seen + 4 unseen classes, 100-d GloVe embeddings.
    # Trained from scratch, so its BN trains: frozen BN with initial statistics does not
    # normalise, and the ASPP output then saturates the sigmoids (std ~600 on pixel-scale input).
    "tiny": ModelConfig(backbone="deeplabv2_tiny", freeze_bn=False, feature_dim=64, context_width=64,
                        embedding_dim=100, generator_widths=(256, 240, 216, 196, 180), discriminator_width=256,
                        num_seen=12, num_unseen=4),
}


def model_config(arch: str | ModelConfig = "original", **overrides: Any) -> ModelConfig:
    """A preset (by name) or a given config, with field overrides. Unknown names -> ConfigError."""
    if isinstance(arch, ModelConfig):
        base = arch
    elif arch in MODEL_PRESETS:
        base = MODEL_PRESETS[arch]
    else:
        raise ConfigError(f"model: unknown preset {arch!r} (known: {', '.join(MODEL_PRESETS)})")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"model: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    if "backbone" in overrides and overrides["backbone"] != base.backbone:
        # a new backbone preset brings its own depth/width unless those are overridden too
        overrides.setdefault("backbone_blocks", None)
        overrides.setdefault("base_width", None)
    return dataclasses.replace(base, **overrides)


@dataclass
class ContextOutput:
    """What :meth:`CaGNet.extract` returns. Grids: h x w = full-scale feature grid.

    Attributes:
        feature: real feature of the full-scale pass [N,C,h,w], in (0, 1).
        latent: contextual latent code [N,C,h,w]; sampled in training, = mu in eval.
        mu, logvar: [N,C,h,w].
        kl: scalar KL term over the labelled pixels of the full-scale pass.
        semantic: ASPP output h of the full-scale pass [N,C,h,w] (after ``semantic_norm``).
        scale_features: real feature of each input scale (config order, first = full scale),
            each on its own grid.
        fused: pixel-wise max of ``scale_features`` on the h x w grid (bilinear resize);
            ``feature`` itself when only the full scale ran.
    """

    feature: torch.Tensor
    latent: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    kl: torch.Tensor
    semantic: torch.Tensor
    scale_features: tuple[torch.Tensor, ...] = field(default_factory=tuple)
    fused: torch.Tensor | None = None

    @property
    def classification_features(self) -> list[torch.Tensor]:
        """Features the original's step-1 classification loss averages over:
        each scale's feature, then the fused one (just the feature with a single scale)."""
        if len(self.scale_features) <= 1:
            return [self.feature]
        return [*self.scale_features, self.fused]


class CaGNet(nn.Module):
    """Context-aware feature generation network (see the module docstring for the data flow).

    Submodules: ``backbone`` (:class:`DeepLabV2`), ``context`` (:class:`ContextualModule`),
    ``generator`` (:class:`FeatureGenerator`), ``discriminator`` (:class:`Discriminator`).
    Buffers (saved in the state dict, never trained): ``seen_class_embeddings``
    [seen_table_rows, E] (rows 0..S-1 = seen classes, the rest zero) and ``class_embeddings``
    [S+U, E] (seen then unseen, evaluation order).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        # buffers first: the state dict then lists them first, like the original's embeddings
        self.register_buffer("seen_class_embeddings", torch.zeros(cfg.seen_table_rows, cfg.embedding_dim))
        self.register_buffer("class_embeddings", torch.zeros(cfg.num_classes, cfg.embedding_dim))
        self.generator = FeatureGenerator(cfg.generator_input_dim, cfg.feature_dim, cfg.generator_widths,
                                          cfg.generator_dropouts)
        self.discriminator = Discriminator(cfg.feature_dim, cfg.discriminator_width, cfg.num_outputs,
                                           cfg.discriminator_dropout, cfg.patch_size)
        self.backbone = DeepLabV2(cfg.backbone_blocks, cfg.base_width, cfg.feature_dim, cfg.aspp_dilations,
                                  cfg.freeze_bn)
        self.context = ContextualModule(cfg.feature_dim, cfg.context_width, cfg.context_dilations,
                                        gated=cfg.context_gates)
        if cfg.context_latent == "none":
            # unused without the latent code: frozen, so that no optimiser or DDP expects a gradient
            self.context.requires_grad_(False)
        if cfg.semantic_norm == "batch":
            self.semantic_norm = (FrozenBatchNorm2d(cfg.feature_dim) if cfg.freeze_bn
                                  else nn.BatchNorm2d(cfg.feature_dim))
        else:
            self.semantic_norm = nn.Identity()
        self.reset_parameters()

    # ----------------------------------------------------------------- set-up
    def reset_parameters(self) -> None:
        """Kaiming-normal (fan in) conv weights and zero biases, as the original's ``init: kaiming``;
        BN: weight 1, bias 0, running statistics 0 / 1 (:func:`kaiming_init`)."""
        kaiming_init(self)

    def set_class_embeddings(self, class_embeddings: torch.Tensor | np.ndarray) -> None:
        """Fill both embedding tables from [S+U, E] rows (seen classes first, evaluation order)."""
        table = torch.as_tensor(np.asarray(class_embeddings) if not torch.is_tensor(class_embeddings)
                                else class_embeddings, dtype=torch.float32)
        expected = tuple(self.class_embeddings.shape)
        if tuple(table.shape) != expected:
            raise ConfigError(f"class embeddings: shape {tuple(table.shape)} does not match the model's "
                              f"{expected} (S+U classes x embedding dim)")
        s = self.config.num_seen
        with torch.no_grad():
            self.class_embeddings.copy_(table)
            self.seen_class_embeddings.zero_()
            self.seen_class_embeddings[:s].copy_(table[:s])

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role, for optimisers with per-group learning rates.

        ``backbone`` (stem/ResNet convs; BN too when not frozen), ``aspp_weight``, ``aspp_bias``,
        ``context`` (branches, fuse, mu, logvar), ``context_gates`` (the gate conv),
        ``generator``, ``discriminator``. The original gives the backbone 1x, the contextual
        convs 5x, ASPP weights 10x and biases 20x the base rate; its parameter selection
        leaves the gate conv out of every optimiser (it keeps its initial values).
        """
        body = [self.backbone.stem, self.backbone.res2, self.backbone.res3, self.backbone.res4, self.backbone.res5]
        ctx = self.context
        groups = {
            "backbone": [p for m in body for p in m.parameters() if p.requires_grad],
            "aspp_weight": [b.weight for b in self.backbone.aspp.branches],
            "aspp_bias": [b.bias for b in self.backbone.aspp.branches],
            "context": [*ctx.branches.parameters(), *ctx.fuse.parameters(), *ctx.mu.parameters(),
                        *ctx.logvar.parameters(),
                        *(p for p in self.semantic_norm.parameters() if p.requires_grad)],
            "context_gates": list(ctx.gates.parameters()),
            "generator": list(self.generator.parameters()),
            "discriminator": list(self.discriminator.parameters()),
        }
        return groups

    # ----------------------------------------------------------------- forward API
    def _single_scale(self, image: torch.Tensor) -> tuple[torch.Tensor, ContextualLatent]:
        """One backbone + contextual pass: (semantic feature h, latent/mu/logvar).

        With ``context_latent: none`` the contextual module does not run: latent = mu = logvar
        = 0 (KL 0, real feature ``sigmoid(1.5 h)``).
        """
        semantic = self.semantic_norm(self.backbone(image))
        if self.config.context_latent == "none":
            zero = torch.zeros_like(semantic)
            return semantic, ContextualLatent(latent=zero, mu=zero, logvar=zero)
        ctx = self.context(semantic)
        return semantic, ctx

    def extract(self, image: torch.Tensor, labelled_mask: torch.Tensor | None = None,
                multi_scale: bool = True) -> ContextOutput:
        """Real features, contextual latent code and KL term of an image batch.

        Args:
            image: [N, 3, H, W] (BGR minus mean for original weights).
            labelled_mask: bool [N, H, W] (or [N, h, w]), True = labelled pixel; it restricts
                the KL term (nearest resize to the feature grid). None = every pixel.
            multi_scale: also run the other input scales of ``config.scales`` (bilinear
                resize of the image) and fuse them by pixel-wise max; False = full scale only.
        """
        semantic, ctx = self._single_scale(image)
        feature = real_feature(semantic, ctx.latent)
        if labelled_mask is not None and labelled_mask.shape[-2:] != ctx.mu.shape[-2:]:
            labelled_mask = resize_mask(labelled_mask, ctx.mu.shape[-2:])
        if self.config.context_latent == "none":   # no latent code, no KL term
            kl = torch.zeros((), device=semantic.device)
        else:
            kl = kl_divergence(ctx.mu, ctx.logvar, labelled_mask)
        scale_features = [feature]
        if multi_scale:
            for scale in self.config.scales[1:]:
                s_semantic, s_ctx = self._single_scale(resize_to_scale(image, scale))
                scale_features.append(real_feature(s_semantic, s_ctx.latent))
        fused = max_fuse(scale_features) if len(scale_features) > 1 else feature
        return ContextOutput(feature=feature, latent=ctx.latent, mu=ctx.mu, logvar=ctx.logvar, kl=kl,
                             semantic=semantic, scale_features=tuple(scale_features), fused=fused)

    def embed_labels(self, labels: torch.Tensor, table: str = "all") -> torch.Tensor:
        """Per-pixel word embeddings [N, E, h, w] of a label map [N, h, w] (int64).

        ``table="seen"``: labels 0..S-1 index the seen table (255 gives a zero row), as in
        step 1; ``table="all"``: labels 0..S+U-1 index all classes, as in step 2.
        """
        if table == "seen":
            weights = self.seen_class_embeddings
        elif table == "all":
            weights = self.class_embeddings
        else:
            raise ValueError(f"table must be 'seen' or 'all', got {table!r}")
        return nn.functional.embedding(labels, weights).permute(0, 3, 1, 2)

    def generator_input(self, embeddings: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``[embeddings ; latent]`` along channels: [N, E + C, h, w]."""
        return torch.cat([embeddings.to(latent.dtype), latent], dim=1)

    def generate(self, embeddings: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Fake feature [N,C,h,w] from per-pixel embeddings [N,E,h,w] and a latent code [N,C,h,w].

        Detach ``latent`` first to keep generator losses out of the backbone (step 1).
        """
        return self.generator(self.generator_input(embeddings, latent))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w] of real or fake features [N, C, h, w]."""
        return self.discriminator.classify(feature)

    def gan_score(self, feature: torch.Tensor) -> torch.Tensor:
        """Real/fake probability [N, 1, h, w] of features [N, C, h, w]."""
        return self.discriminator.gan_score(feature)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w] from the full-scale feature (inference)."""
        semantic, ctx = self._single_scale(image)
        return self.classify(real_feature(semantic, ctx.latent))


def build_cagnet(arch: str | ModelConfig = "original", *, class_embeddings: torch.Tensor | np.ndarray | None = None,
                 num_seen: int | None = None, num_unseen: int | None = None,
                 device: torch.device | str | None = None, **overrides: Any) -> CaGNet:
    """Build a CaGNet from a preset name or a :class:`ModelConfig`.

    Args:
        arch: ``original`` (= ``original_voc12``), ``original_context``, ``original_cocostuff``,
            ``small_reference``, ``tiny``, or a ModelConfig.
        class_embeddings: optional [S+U, E] table (seen rows first); sets ``embedding_dim`` and
            fills both embedding buffers. With only one of num_seen/num_unseen given, the
            other follows from its row count.
        num_seen, num_unseen: class counts (override the preset).
        device: where to build the parameters (``"meta"`` builds shapes only, no memory).
        **overrides: any other ModelConfig field.
    """
    if num_seen is not None:
        overrides["num_seen"] = num_seen
    if num_unseen is not None:
        overrides["num_unseen"] = num_unseen
    table = None
    if class_embeddings is not None:
        table = torch.as_tensor(np.asarray(class_embeddings) if not torch.is_tensor(class_embeddings)
                                else class_embeddings, dtype=torch.float32)
        if table.ndim != 2:
            raise ConfigError(f"class embeddings: expected a [classes, dim] table, got shape {tuple(table.shape)}")
        rows = table.shape[0]
        overrides["embedding_dim"] = table.shape[1]
        if num_seen is None and num_unseen is not None:
            overrides["num_seen"] = rows - num_unseen
        elif num_unseen is None and num_seen is not None:
            overrides["num_unseen"] = rows - num_seen
    cfg = model_config(arch, **overrides)
    if table is not None and table.shape[0] != cfg.num_classes:
        raise ConfigError(f"class embeddings: {table.shape[0]} rows, but the model has "
                          f"{cfg.num_seen} seen + {cfg.num_unseen} unseen = {cfg.num_classes} classes")
    if device is not None:
        with torch.device(device):
            model = CaGNet(cfg)
    else:
        model = CaGNet(cfg)
    if table is not None and model.class_embeddings.device.type != "meta":
        model.set_class_embeddings(table)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
