"""Figures for the notebooks.

Pure functions: they return a matplotlib ``Figure`` or a numpy array and never call
``plt.show()``; the caller displays or saves the result. One class palette colours every
figure (:func:`class_palette`: classes named after one colour get shades of it that differ
strongly in lightness and chroma); label maps mark ignored pixels with ``ignore_index``
(:data:`cagnet.data.IGNORE_INDEX`), drawn in :data:`IGNORE_COLOUR`. Unseen classes are marked
one way everywhere: a trailing "*" on their name, hatching on what is drawn in their colour
(:data:`UNSEEN_NOTE`). Prediction figures show the ground truth and the prediction in the
same encoding next to an error map (:func:`error_map`: which kind of mistake each pixel is).
Every figure is at most :data:`MAX_FIGURE_WIDTH` inches wide (1,750 px at the notebooks' 100 dpi).

Every figure is a name of this package (``viz.plot_samples(...)``), drawn by one of its modules:

Modules
-------
``masks``        the class palette, label maps as colours, overlays on images, hatching
``legends``      the marking of unseen classes, class legends that fit their figure, the width limit
``error_maps``   the kind of mistake at each pixel (seen / unseen confusions), in fixed colours
``dataset``      sample grids, class pixel shares, embedding similarities, class swatches, a class under scenes
``blocks``       mosaics of small label blocks (CaGNetv2's bank of label blocks)
``features``     maps on the feature grid, many channels as colour, receptive fields, feature projections
``training``     training curves, a run's losses and scores, predictions of a run, step-2 class priors and label maps
``evaluation``   overlays with legends, confusion heatmap, per-class IoU, calibration sweep, prediction panels
``pipeline``     the CaGNet pipeline diagram

The numbers behind some figures live with what they measure: :func:`cagnet.analysis.fit_pca`
and :func:`cagnet.analysis.moving_average`, :func:`cagnet.metrics.per_image_iou`,
:func:`cagnet.data.cosine_similarity`, :func:`cagnet.data.class_pixel_counts`.
"""
from cagnet.viz.error_maps import (ERROR_CATEGORIES, ERROR_COLOURS, error_categories, error_legend_handles, error_map,
                                   error_shares)
from cagnet.viz.legends import MAX_FIGURE_WIDTH, UNSEEN_MARK, UNSEEN_NOTE, unseen_label
from cagnet.viz.dataset import (plot_class_pixel_stats, plot_class_swatches, plot_class_under_scenes,
                                plot_embedding_similarity, plot_samples)
from cagnet.viz.blocks import label_block_mosaic, plot_label_blocks
from cagnet.viz.evaluation import (overlay_with_legend, plot_calibration_sweep, plot_class_iou, plot_confusion_matrix,
                                   plot_method_panels)
from cagnet.viz.features import channels_to_rgb, plot_feature_projection, plot_receptive_fields, plot_spatial_maps
from cagnet.viz.masks import (COLOUR_WORDS, IGNORE_COLOUR, class_palette, colorize_mask, colour_word, hatch,
                              overlay_mask, rgb_to_lab)
from cagnet.viz.pipeline import plot_pipeline
from cagnet.viz.training import (LOSS_PANELS, plot_class_prior, plot_eval_curves, plot_label_maps, plot_loss_curves,
                                 plot_predictions, plot_training_curves)


__all__ = [
    "plot_class_pixel_stats", "plot_class_swatches", "plot_class_under_scenes", "plot_embedding_similarity",
    "plot_samples",
    "label_block_mosaic", "plot_label_blocks",
    "overlay_with_legend", "plot_calibration_sweep", "plot_class_iou", "plot_confusion_matrix", "plot_method_panels",
    "channels_to_rgb", "plot_feature_projection", "plot_receptive_fields", "plot_spatial_maps",
    "COLOUR_WORDS", "IGNORE_COLOUR", "class_palette", "colorize_mask", "colour_word", "hatch", "overlay_mask",
    "rgb_to_lab",
    "ERROR_CATEGORIES", "ERROR_COLOURS", "error_categories", "error_legend_handles", "error_map", "error_shares",
    "MAX_FIGURE_WIDTH", "UNSEEN_MARK", "UNSEEN_NOTE", "unseen_label",
    "plot_pipeline",
    "LOSS_PANELS", "plot_class_prior", "plot_eval_curves", "plot_label_maps", "plot_loss_curves", "plot_predictions",
    "plot_training_curves",
]
