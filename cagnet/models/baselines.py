"""The comparison methods of the CaGNet paper: SPNet and ZS3Net on the same DeepLabV2 backbone.

Both models take the backbone settings of a :class:`~cagnet.models.ModelConfig` (backbone
preset, ``backbone_blocks``, ``base_width``, ``aspp_dilations``, ``freeze_bn``) and return
class logits ``[N, S+U+1, h, w]`` on the output-stride-8 grid, like :class:`CaGNet`, so
:func:`cagnet.evaluate.evaluate` scores them unchanged (its argmax runs over the first S+U
outputs). S/U = seen/unseen class counts, E = word-embedding dim, C = feature dim.

**SPNet** (Xian et al., "Semantic projection network for zero- and few-label semantic
segmentation", CVPR 2019)::

    image [N,3,H,W] -> DeepLabV2 (ASPP with E outputs) -> visual-semantic feature f [N,E,h,w]
    logits[:, k] = <f, w_k>   (w_k = word embedding of class k, fixed; a buffer, never trained)

In training mode only the S seen rows score (the unseen outputs hold a constant very negative
logit, so a cross-entropy over all outputs equals the one over the seen projections); in eval
mode all S+U rows do. The extra last output is always that constant. SPNet-c is SPNet with
calibrated stacking (``seen_penalty`` of :func:`cagnet.evaluate.evaluate`), not another model.

**ZS3Net** (Bucher et al., "Zero-shot semantic segmentation", NeurIPS 2019)::

    image -> DeepLabV2 (ASPP with C outputs) -> BN -> ReLU -> feature x [N,C,h,w]
    classifier: 1x1 conv C -> S+U+1                      -> logits [N,S+U+1,h,w]
    GMMN: [word embedding ; noise] (E + E) -> hidden (LeakyReLU 0.2, dropout 0.5) -> C
          = a fake feature for any class, seen or unseen

ZS3Net generates the features DeepLabv3+ feeds to its last 1x1 classifier; those come out of
a conv-BN-ReLU block, so here the ASPP output (the conv) goes through batch norm (frozen or
trainable as ``freeze_bn`` says, like the backbone's) and a ReLU; the GMMN output is linear,
as in ZS3Net's generator. The batch norm matters when the backbone trains from scratch: a
bare ReLU on the ASPP output, whose scale is set by the caffe-range input, leaves most
channels dead after a few updates. The GMMN is a per-pixel MLP written as 1x1 convs (ZS3Net
uses linear layers on feature vectors: the same map). Its training (per-class MMD against
real features), the classifier retraining on real seen + generated unseen features and the
self-training variant are in :mod:`cagnet.train.baselines`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cagnet.errors import ConfigError
from cagnet.models.backbone import DeepLabV2, FrozenBatchNorm2d
from cagnet.models.cagnet import ModelConfig, kaiming_init

#: Logit of the outputs that must never win an argmax or take probability mass (the extra
#: output, and the unseen outputs of SPNet in training mode). Finite, so that softmax and
#: cross-entropy stay finite, and representable in bf16 / fp16.
NEGATIVE_LOGIT = -1.0e4

#: GMMN widths and rates of ZS3Net (Pascal-VOC: 300-d noise = embedding dim, 256 hidden).
GMMN_HIDDEN = 256
GMMN_DROPOUT = 0.5
GMMN_NEGATIVE_SLOPE = 0.2


def _backbone(config: ModelConfig, output_dim: int) -> DeepLabV2:
    """The DeepLabV2 of ``config`` with ``output_dim`` ASPP channels."""
    return DeepLabV2(config.backbone_blocks, config.base_width, output_dim, config.aspp_dilations,
                     config.freeze_bn)


def _as_table(class_embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
    if not torch.is_tensor(class_embeddings):
        class_embeddings = torch.from_numpy(np.asarray(class_embeddings))
    return class_embeddings.to(torch.float32)


class _EmbeddingTable(nn.Module):
    """Holds the fixed [S+U, E] class-embedding buffer (seen rows first, evaluation order)."""

    config: ModelConfig

    def set_class_embeddings(self, class_embeddings: torch.Tensor | np.ndarray) -> None:
        """Fill the [S+U, E] table (seen rows first, evaluation order)."""
        table = _as_table(class_embeddings)
        expected = tuple(self.class_embeddings.shape)
        if tuple(table.shape) != expected:
            raise ConfigError(f"class embeddings: shape {tuple(table.shape)} does not match the model's "
                              f"{expected} (S+U classes x embedding dim)")
        with torch.no_grad():
            self.class_embeddings.copy_(table)

    def _extra_output(self, like: torch.Tensor) -> torch.Tensor:
        """The constant extra output [N, 1, h, w] for a map ``like`` [N, *, h, w]."""
        return like.new_full((like.shape[0], 1, *like.shape[2:]), NEGATIVE_LOGIT)


class SPNet(_EmbeddingTable):
    """Semantic projection network (Xian et al., CVPR 2019) on the DeepLabV2 backbone.

    Args:
        config: architecture; the backbone fields are used, ``embedding_dim`` E is the ASPP
            output width, ``num_seen`` / ``num_unseen`` the class counts.
        class_embeddings: optional [S+U, E] table (seen rows first) for the fixed buffer
            ``class_embeddings``.

    Submodules: ``backbone`` (:class:`DeepLabV2`, ASPP -> E channels). Buffer:
    ``class_embeddings`` [S+U, E].
    """

    def __init__(self, config: ModelConfig, class_embeddings: torch.Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("class_embeddings", torch.zeros(config.num_classes, config.embedding_dim))
        self.backbone = _backbone(config, config.embedding_dim)
        kaiming_init(self)
        if class_embeddings is not None:
            self.set_class_embeddings(class_embeddings)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Visual-semantic feature [N, E, h, w] of images [N, 3, H, W]."""
        return self.backbone(image)

    def project(self, feature: torch.Tensor, classes: str = "all") -> torch.Tensor:
        """Dot products of a feature [N, E, h, w] with the class embeddings.

        ``classes="seen"``: [N, S, h, w] (rows 0..S-1); ``"all"``: [N, S+U, h, w].
        """
        if classes == "seen":
            table = self.class_embeddings[:self.config.num_seen]
        elif classes == "all":
            table = self.class_embeddings
        else:
            raise ValueError(f"classes must be 'seen' or 'all', got {classes!r}")
        return torch.einsum("nehw,ke->nkhw", feature, table.to(feature.dtype))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w]: seen projections (and, in eval mode, unseen ones),
        constant :data:`NEGATIVE_LOGIT` elsewhere."""
        feature = self.embed(image)
        if self.training:
            seen = self.project(feature, "seen")
            rest = seen.new_full((seen.shape[0], self.config.num_unseen + 1, *seen.shape[2:]), NEGATIVE_LOGIT)
            return torch.cat([seen, rest], dim=1)
        logits = self.project(feature, "all")
        return torch.cat([logits, self._extra_output(logits)], dim=1)


class GMMNGenerator(nn.Module):
    """ZS3Net's generative moment-matching network, per pixel (1x1 convs).

    ``[embedding ; noise]`` [N, E + Z, h, w] -> 1x1 conv -> hidden, LeakyReLU(0.2), dropout
    -> 1x1 conv -> fake feature [N, C, h, w] (linear output). Xavier-uniform weights and
    0.01 biases, as ZS3Net initialises it.

    Args:
        embedding_dim: E.
        noise_dim: Z (ZS3Net: = E).
        feature_dim: C.
        hidden_dim, dropout: width and dropout rate of the hidden layer.
    """

    def __init__(self, embedding_dim: int, noise_dim: int, feature_dim: int, hidden_dim: int = GMMN_HIDDEN,
                 dropout: float = GMMN_DROPOUT) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.hidden = nn.Conv2d(embedding_dim + noise_dim, hidden_dim, 1)
        self.activation = nn.LeakyReLU(GMMN_NEGATIVE_SLOPE)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Conv2d(hidden_dim, feature_dim, 1)
        for conv in (self.hidden, self.output):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.constant_(conv.bias, 0.01)

    def forward(self, embeddings: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Fake features [N, C, h, w] from per-pixel embeddings [N, E, h, w] and noise
        [N, Z, h, w] (None: drawn from N(0, I) with the global RNG)."""
        if noise is None:
            noise = torch.randn(embeddings.shape[0], self.noise_dim, *embeddings.shape[2:],
                                device=embeddings.device, dtype=embeddings.dtype)
        x = self.dropout(self.activation(self.hidden(torch.cat([embeddings, noise], dim=1))))
        return self.output(x)


class ZS3Net(_EmbeddingTable):
    """ZS3Net (Bucher et al., NeurIPS 2019) on the DeepLabV2 backbone.

    Args:
        config: architecture; the backbone fields are used, ``feature_dim`` C is the ASPP
            width, ``embedding_dim`` E the word-embedding dim, ``num_seen`` / ``num_unseen``.
        class_embeddings: optional [S+U, E] table (seen rows first).
        noise_dim: GMMN noise dim (default E, as ZS3Net).
        gmmn_hidden, gmmn_dropout: GMMN hidden width / dropout (ZS3Net: 256, 0.5).

    Submodules: ``backbone`` (:class:`DeepLabV2`, ASPP -> C), ``feature_norm`` (batch norm
    of the ASPP output), ``classifier`` (1x1 conv C -> S+U+1), ``generator``
    (:class:`GMMNGenerator`). Buffer: ``class_embeddings`` [S+U, E].
    """

    def __init__(self, config: ModelConfig, class_embeddings: torch.Tensor | np.ndarray | None = None, *,
                 noise_dim: int | None = None, gmmn_hidden: int = GMMN_HIDDEN,
                 gmmn_dropout: float = GMMN_DROPOUT) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("class_embeddings", torch.zeros(config.num_classes, config.embedding_dim))
        self.backbone = _backbone(config, config.feature_dim)
        self.feature_norm = (FrozenBatchNorm2d(config.feature_dim) if config.freeze_bn
                             else nn.BatchNorm2d(config.feature_dim))
        self.classifier = nn.Conv2d(config.feature_dim, config.num_outputs, 1)
        kaiming_init(self)
        self.generator = GMMNGenerator(config.embedding_dim, noise_dim or config.embedding_dim,
                                       config.feature_dim, gmmn_hidden, gmmn_dropout)
        if class_embeddings is not None:
            self.set_class_embeddings(class_embeddings)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Real feature [N, C, h, w] = ReLU(BN(ASPP output)) of images [N, 3, H, W]."""
        return torch.relu(self.feature_norm(self.backbone(image)))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        """Logits [N, S+U+1, h, w] of real or generated features [N, C, h, w]."""
        return self.classifier(feature)

    def embed_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-pixel word embeddings [N, E, h, w] of class indices [N, h, w] in 0..S+U-1."""
        return nn.functional.embedding(labels, self.class_embeddings).permute(0, 3, 1, 2)

    def generate(self, labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Fake features [N, C, h, w] of class indices [N, h, w] (0..S+U-1)."""
        return self.generator(self.embed_labels(labels), noise)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits [N, S+U+1, h, w] of the real feature."""
        return self.classify(self.features(image))
