"""CaGNet: context-aware feature generation for zero-shot semantic segmentation.

A notebook-driven tutorial and reference implementation of Gu et al., ACM MM 2020.

Subpackages and modules
-----------------------
``cagnet.data``      synthetic benchmark, datasets in the original layout, transforms, word embeddings
``cagnet.models``    DeepLabV2 backbone, contextual module, generator, discriminator
``cagnet.losses``    classification, GAN, KL and MMD losses
``cagnet.metrics``   confusion matrix and generalised zero-shot (GZSL) scores
``cagnet.predict``   label maps, overlays and class shares of any image
``cagnet.viz``       figures (pure functions returning matplotlib figures or arrays)
``cagnet.cli``       ``python -m cagnet ...``
"""

__version__ = "0.1.0"
