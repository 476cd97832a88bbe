"""CaGNet: context-aware feature generation for zero-shot semantic segmentation.

A notebook-driven tutorial and reference implementation of Gu et al., ACM MM 2020.

Subpackages and modules
-----------------------
``cagnet.data``      synthetic benchmark, datasets in the original layout, transforms, word embeddings
``cagnet.models``    DeepLabV2 backbone, contextual module, generator, discriminator
``cagnet.losses``    classification, GAN, KL and MMD losses
``cagnet.metrics``   confusion matrix and generalised zero-shot (GZSL) scores
``cagnet.train``     the training engine, run folders, the comparison methods' training
``cagnet.evaluate``  GZSL evaluation protocols and seen-class calibration
``cagnet.predict``   label maps, overlays and class shares of any image
``cagnet.viz``       figures (pure functions returning matplotlib figures or arrays)
``cagnet.analysis``  the numbers behind some figures (PCA projections, moving averages)
``cagnet.config``    the training configuration (``cagnet.config_io``: dataclasses from YAML)
``cagnet.runtime``   threads, subnormal floats, autocast, seeding
``cagnet.cli``       ``python -m cagnet ...``
"""

__version__ = "0.1.0"
