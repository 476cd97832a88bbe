"""CaGNet networks: DeepLabV2 backbone, contextual module, generator, discriminator.

Modules, each readable on its own:

``backbone``       dilated ResNet + ASPP (frozen BN), multi-scale input helpers
``contextual``     contextual module: gated dilated branches -> mu, logvar -> latent; real feature; KL
``generator``      per-pixel MLP: [word embedding ; latent] -> fake feature
``discriminator``  shared layer + real/fake head + classifier head (pixel-wise, or CaGNetv2's 3x3 patch head)
``cagnet``         the full model, :class:`ModelConfig`, presets, :func:`build_cagnet`
``baselines``      the comparison methods SPNet and ZS3Net (with its GMMN generator)
``pixelcnn``       CaGNetv2's label-block PixelCNN (masked convs over word embeddings of labels)
``convert``        checkpoints of the original implementation <-> this model (CaGNet, CaGNetv2's patch
                   classifier and PixelCNN); torchvision ResNets -> its backbone
"""
from cagnet.models.backbone import (ASPP, BACKBONE_PRESETS, Bottleneck, ConvBN, DeepLabV2, FrozenBatchNorm2d,
                                    max_fuse, resize_to_scale)
from cagnet.models.baselines import NEGATIVE_LOGIT, SPNet, GMMNGenerator, ZS3Net
from cagnet.models.cagnet import (MODEL_PRESETS, CaGNet, ContextOutput, ModelConfig, build_cagnet,
                                  count_parameters, model_config)
from cagnet.models.contextual import (ContextualLatent, ContextualModule, real_feature,
                                      reparameterize, resize_mask)
from cagnet.models.convert import (LAYOUT_NORMALIZATION, LoadReport, check_input_normalization,
                                   config_from_original_state_dict, load_checkpoint, load_original_discriminator,
                                   load_original_pixelcnn, original_pixelcnn_to_project_key,
                                   original_to_project_key, project_pixelcnn_to_original_key,
                                   project_to_original_key, read_checkpoint, save_original_checkpoint,
                                   to_original_discriminator_state_dict, to_original_pixelcnn_state_dict,
                                   to_original_state_dict, torchvision_to_project_key)
from cagnet.models.discriminator import PATCH_SIZES, Discriminator
from cagnet.models.pixelcnn import (CONDITION_INITS, LabelBlockPixelCNN, MaskedConv2d, block_condition_classes,
                                    causal_mask)
from cagnet.models.generator import FeatureGenerator

__all__ = [
    "ASPP", "BACKBONE_PRESETS", "Bottleneck", "ConvBN", "DeepLabV2", "FrozenBatchNorm2d", "max_fuse",
    "resize_to_scale",
    "MODEL_PRESETS", "CaGNet", "ContextOutput", "ModelConfig", "build_cagnet", "count_parameters", "model_config",
    "ContextualLatent", "ContextualModule", "real_feature", "reparameterize", "resize_mask",
    "LAYOUT_NORMALIZATION", "LoadReport", "check_input_normalization", "torchvision_to_project_key",
    "config_from_original_state_dict", "load_checkpoint", "original_to_project_key", "project_to_original_key", "read_checkpoint",
    "save_original_checkpoint", "to_original_state_dict",
    "load_original_discriminator", "to_original_discriminator_state_dict",
    "load_original_pixelcnn", "to_original_pixelcnn_state_dict", "original_pixelcnn_to_project_key",
    "project_pixelcnn_to_original_key",
    "PATCH_SIZES", "Discriminator", "FeatureGenerator",
    "CONDITION_INITS", "LabelBlockPixelCNN", "MaskedConv2d", "block_condition_classes", "causal_mask",
    "NEGATIVE_LOGIT", "SPNet", "GMMNGenerator", "ZS3Net",
]
