"""The CaGNet pipeline diagram of the README (``scripts/draw_pipeline.py``)."""
from __future__ import annotations

from matplotlib.figure import Figure

_PIPELINE_COLOURS = {
    "real": ("#dbe9f6", "#1f77b4"),      # (fill, edge): image -> backbone -> real feature
    "context": ("#e7e1f1", "#6a51a3"),   # contextual module and latent code
    "fake": ("#fde5cc", "#d9630b"),      # word embeddings, generator, generated features
    "judge": ("#e3f1e0", "#2c8a2c"),     # classifier / discriminator
    "step2": ("#f5f5f5", "#555555"),
}


def plot_pipeline() -> Figure:
    """The CaGNet pipeline as a box-and-arrow diagram (one axes, axis off).

    Step 1 (top): image -> DeepLabV2 backbone with ASPP -> semantic feature h -> contextual
    module (dilated convolutions and gates) -> latent code z (mu, logvar; KL loss) -> real
    feature x = sigmoid(h + h * sigmoid(z)) -> classifier / discriminator; the word
    embedding w of each pixel's class with the same z -> generator -> fake feature, judged by
    the same classifier / discriminator (GAN and classification losses), MMD between real
    and fake features. Step 2 (bottom): seen and unseen embeddings with z ~ N(0, I) -> the
    generator -> fake features (unseen ones included) that finetune the classifier.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    figure = Figure(figsize=(11.8, 6.5))
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 72)
    ax.set_axis_off()
    boxes: dict[str, tuple[float, float, float, float]] = {}

    def box(key: str, x: float, y: float, width: float, height: float, text: str, kind: str,
            fontsize: float = 11.5, weight: str = "normal") -> None:
        fill, edge = _PIPELINE_COLOURS[kind]
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.3,rounding_size=1.2", facecolor=fill, edgecolor=edge,
                                    linewidth=1.8, zorder=2))
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, fontweight=weight, zorder=3,
                linespacing=1.3)
        boxes[key] = (x, y, width, height)

    def side(key: str, where: str, shift: float = 0.0) -> tuple[float, float]:
        x, y, width, height = boxes[key]
        pad = 0.5  # the rounded border sits 0.3 outside the box
        return {"left": (x - width / 2 - pad, y + shift), "right": (x + width / 2 + pad, y + shift),
                "top": (x + shift, y + height / 2 + pad), "bottom": (x + shift, y - height / 2 - pad)}[where]

    def arrow(start: tuple[float, float], end: tuple[float, float], colour: str = "0.25", style: str = "-|>",
              connection: str = "arc3", linestyle: str = "-", width: float = 1.8) -> None:
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=16, color=colour,
                                     linewidth=width, linestyle=linestyle, connectionstyle=connection,
                                     shrinkA=0, shrinkB=0, zorder=1))

    loss_style = {"fontsize": 10.5, "color": "#b2182b", "fontstyle": "italic"}

    # ---- step 1, real path (top row)
    top = 56.0
    ax.text(1.5, 70.0, "Step 1: train the segmentation network and the feature generator on the seen classes",
            fontsize=13, fontweight="bold", va="top")
    box("image", 7, top, 10, 9, "image", "real")
    box("backbone", 24, top, 15, 11, "DeepLabV2\nResNet-101\n+ ASPP", "real")
    box("h", 40, top, 10, 9, "semantic\nfeature $h$", "real")
    box("context", 57.5, top, 19, 11, "contextual module\ndilated 3x3 convs\n(1, 2, 5) + gates", "context")
    box("z", 77, top, 13, 9, "latent code $z$\n$(\\mu, \\log\\sigma^2)$", "context")
    box("x", 98, top, 19, 9, "real feature\n$x = \\sigma(h + h\\,\\sigma(z))$", "real")
    box("judge", 120.5, 47, 16, 23, "classifier\n(S+U+1 logits)\n\n+\n\ndiscriminator\n(real / fake)", "judge")
    arrow(side("image", "right"), side("backbone", "left"))
    arrow(side("backbone", "right"), side("h", "left"))
    arrow(side("h", "right"), side("context", "left"))
    arrow(side("context", "right"), side("z", "left"))
    arrow(side("z", "right"), side("x", "left"))
    arrow(side("h", "top"), side("x", "top", -5.0), connection="arc3,rad=-0.12")  # h also enters x directly
    arrow(side("x", "right"), side("judge", "left", 6.0))
    ax.text(75.5, 46.0, "KL$(q(z\\,|\\,h)\\,\\|\\,\\mathcal{N}(0, I))$", ha="right", **loss_style)

    # ---- step 1, generated path (middle row)
    middle = 36.0
    box("w", 48, middle, 21, 9, "word embedding $w$\nof each pixel's class", "fake")
    box("generator", 77, middle, 15, 9, "generator\n(1x1-conv MLP)", "fake")
    box("fake", 98, middle, 19, 9, "fake feature\n$\\tilde{x} = G(w, z)$", "fake")
    arrow(side("w", "right"), side("generator", "left"), colour="#d9630b")
    arrow(side("z", "bottom"), side("generator", "top"), colour="#6a51a3")
    arrow(side("generator", "right"), side("fake", "left"), colour="#d9630b")
    arrow(side("fake", "right"), side("judge", "left", -6.0), colour="#d9630b")
    arrow(side("x", "bottom"), side("fake", "top"), colour="#b2182b", style="<|-|>", linestyle="--", width=1.5)
    ax.text(99.5, (top + middle) / 2, "MMD", va="center", **loss_style)
    ax.text(119.5, 33.0, "GAN loss (real vs. fake)\n+ classification loss\non real and fake pixels", va="top",
            ha="center", **loss_style)

    # ---- step 2 (bottom row)
    ax.plot([1.5, 128.5], [24.5, 24.5], color="0.6", linestyle="--", linewidth=1.0)
    ax.text(1.5, 22.5, "Step 2: finetune the classifier on generated features, unseen classes included",
            fontsize=13, fontweight="bold", va="top")
    bottom = 9.0
    box("w2", 20, bottom, 33, 9, "word embeddings of seen + unseen\nclasses (unseen drawn more often)", "fake")
    box("noise", 52, bottom, 12, 9, "$z \\sim \\mathcal{N}(0, I)$", "context")
    box("generator2", 77, bottom, 15, 9, "generator", "fake")
    box("fake2", 98, bottom, 19, 9, "fake features,\nunseen included", "fake")
    box("classifier2", 120.5, bottom, 16, 9, "classifier\n(finetuned)", "judge", weight="bold")
    arrow(side("w2", "top", 8.0), side("generator2", "top", -3.0), colour="#d9630b", connection="arc3,rad=-0.25")
    arrow(side("noise", "right"), side("generator2", "left"), colour="#6a51a3")
    arrow(side("generator2", "right"), side("fake2", "left"), colour="#d9630b")
    arrow(side("fake2", "right"), side("classifier2", "left"), colour="#d9630b")
    ax.text(120.5, bottom + 6.5, "classification loss", ha="center", **loss_style)
    return figure
