"""The methods of the CaGNet paper's comparison, trained (or reused) and scored on a config's data.

:class:`MethodRuns` trains what one seed of one configuration needs for SPNet, ZS3Net,
ZS3Net+ST, CaGNet, CaGNet+ST and the patch-wise CaGNetv2 and CaGNetv2+ST, and scores them on a
split, each also calibrated (``<method>-c``: SPNet-c, ZS3Net-c, ..., CaGNetv2+ST-c). The
benchmark (:mod:`cagnet.benchmark`, test split), the ablation harness (:mod:`cagnet.ablate`,
validation split) and notebook 06 use it, so every method is trained the same way everywhere.

Run folders live under ``runs_root`` and are named after what decides their weights: a short
digest of the run's recipe (CaGNet: :func:`cagnet.train.runs.run_recipe`, the configuration
without its runtime settings, with the seed and the schedules up to the run's own; a baseline:
:func:`cagnet.train.baselines.baseline_recipe`, the settings it reads). A folder that
already holds the finished run of the same recipe is reused instead of trained again, so
configurations that differ only in later schedules (e.g. two ``gen_unseen_rate`` values of
``mixed``) share their step-1 run, and an interrupted benchmark resumes at the next method::

    <runs_root>/cagnet/<schedule>-<digest>/     engine run folders (step1, mixed, st, st_mixed;
                                                CaGNetv2's too, under their own digests)
    <runs_root>/spnet-<digest>/                 model.pt, recipe.json
    <runs_root>/zs3net-<digest>/
    <runs_root>/zs3net_st-<digest>/

A calibrated row writes ``calibration.json`` (the penalty and how it was chosen) into the run
folder of its model (a baseline's folder; CaGNet's last engine run folder).

Protocol:

* every method trains on the training split with the seed as ``runtime.seed`` (initialisation,
  batch order, augmentation, dropout, noise), starting from ``schedules.step1.init_model``
  (the pretrained backbone of the tutorial); CaGNet through the engine (``step1`` then ``mixed``
  = CaGNet, then ``st`` and ``st_mixed`` = CaGNet+ST), SPNet / ZS3Net / ZS3Net+ST with
  :mod:`cagnet.train.baselines`, whose iteration budgets derive from the same schedules;
* scores: :func:`cagnet.evaluate.evaluate` with the ``original`` protocol on ``split``, without
  calibration except for the ``-c`` rows;
* **<method>-c** is the trained model of ``<method>`` (no retraining) with calibrated stacking
  (Chao et al. 2016): a penalty subtracted from the seen-class logits, of either sign
  (:func:`cagnet.evaluate.penalty_grid`; a negative one boosts the seen classes, for models
  that predict unseen classes too often). SPNet-c is the paper's row; the others are this
  project's. With a validation split (the embedded benchmark) the penalty is the one with the
  best validation hIoU, as SPNet chose it on a validation set; SPNet then trains on all
  training images. Without one (the original datasets) the last ``held_out`` training images
  are kept out of SPNet's training and the penalty is chosen on them without any unseen-class
  label (:func:`cagnet.evaluate.held_out_calibration`); the other methods train on every
  training image (their runs are shared with the uncalibrated rows), so their held-out images
  were seen in training, which the record says (``trained_on_calibration_images``). The
  penalty that would be best on the scored split itself (the *oracle*) is recorded for
  reference only, and ``best_at_edge`` says whether the chosen penalty was an end of the grid
  that still changed predictions (the grid too narrow). The calibrated scores come from the
  same forward pass over the scored split as the oracle curve
  (:func:`cagnet.evaluate.calibration_sweep` with ``include``).
* **CaGNetv2** / **CaGNetv2+ST** are the CaGNet / CaGNet+ST schedules trained with the config's
  patch-wise form (:func:`patchwise_config`: ``model.patch_size`` 3, crops whose feature grid
  is a multiple of 3, the packaged ``<config>_pa3``'s other differences); their step 2 tiles
  pure one-class blocks unless that form says ``block_source: bank`` (a bank file, or the
  config's own bank, built when missing), and ``patch_bank`` names another bank of label
  blocks (or ``pure``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from cagnet.config import PACKAGED_CONFIGS, TrainConfig, load_train_config, train_config_from_dict
from cagnet.config_io import apply_overrides, to_dict
from cagnet.errors import ConfigError
from cagnet.metrics import seen_unseen_confusion
from cagnet.results import json_safe, table_record
from cagnet.runtime import torch_threads

#: The trained methods, in the order they are trained (dependencies first).
TRAINED_METHODS: tuple[str, ...] = ("SPNet", "ZS3Net", "ZS3Net+ST", "CaGNet", "CaGNet+ST", "CaGNetv2", "CaGNetv2+ST")
#: Suffix of a method's calibrated row: its model with a seen penalty (``SPNet-c``).
CALIBRATED_SUFFIX = "-c"
#: Every method: each trained one followed by its calibrated row, in training order.
METHODS: tuple[str, ...] = tuple(name for method in TRAINED_METHODS for name in (method, method + CALIBRATED_SUFFIX))
#: The paper's comparison (the benchmark's default methods), in training order.
DEFAULT_METHODS: tuple[str, ...] = ("SPNet", "SPNet-c", "ZS3Net", "ZS3Net+ST", "CaGNet", "CaGNet+ST")
#: The engine schedules behind the CaGNet methods (CaGNetv2's on the patch-wise config).
CAGNET_SCHEDULES: dict[str, tuple[str, ...]] = {"CaGNet": ("step1", "mixed"),
                                                "CaGNet+ST": ("step1", "mixed", "st", "st_mixed"),
                                                "CaGNetv2": ("step1", "mixed"),
                                                "CaGNetv2+ST": ("step1", "mixed", "st", "st_mixed")}
#: The patch-wise methods and the pixel-wise method each one trains on :func:`patchwise_config`.
PATCHWISE_METHODS: dict[str, str] = {"CaGNetv2": "CaGNet", "CaGNetv2+ST": "CaGNet+ST"}
#: Share of the training images SPNet-c holds out for its calibration when there is no validation split.
HELD_OUT_FRACTION = 0.1


def trained_method(method: str) -> str:
    """The method whose model ``method`` uses: itself, or for a calibrated row (``CaGNet-c``)
    the method without the suffix (``CaGNet``)."""
    return method.removesuffix(CALIBRATED_SUFFIX)


def calibrated_method(method: str) -> str:
    """The calibrated row of ``method`` (``CaGNet`` and ``CaGNet-c`` -> ``CaGNet-c``)."""
    return trained_method(method) + CALIBRATED_SUFFIX


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The requested methods in training order, duplicates removed; unknown names -> ConfigError."""
    requested = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in requested if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    if not requested:
        raise ConfigError(f"no method selected (known: {', '.join(METHODS)})")
    return tuple(m for m in METHODS if m in requested)


def seed_config(config: TrainConfig, seed: int, extra: Sequence[str] = ()) -> TrainConfig:
    """``config`` with ``runtime.seed=seed`` (and ``extra`` ``key=value`` overrides)."""
    data = apply_overrides(to_dict(config), [f"runtime.seed={int(seed)}", *extra])
    return train_config_from_dict(data)


def default_held_out(num_train: int) -> int:
    """SPNet-c's held-out image count: 10 % of the training images (at least 1)."""
    if num_train < 2:
        raise ConfigError(f"SPNet-c needs at least 2 training images (one held out), the split has {num_train}")
    return min(num_train - 1, max(1, round(HELD_OUT_FRACTION * num_train)))


def recipe_digest(recipe: Mapping[str, Any]) -> str:
    """12 hex digits of a SHA-256 over a recipe's canonical JSON."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


#: The schedules whose step 2 tiles label blocks in patch-wise training (their crops must give a
#: feature grid that is a multiple of the patch size).
_BLOCK_SCHEDULES: tuple[str, ...] = ("mixed", "st_mixed")
PATCH_SIZE = 3


def _differences(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` of the values in which ``after`` differs from ``before`` (nested mappings
    compared key by key; a section that ``before`` lacks is one value)."""
    found: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key) if isinstance(before, Mapping) else None
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            found.update(_differences(old, value, f"{prefix}{key}."))
        elif value != old:
            found[f"{prefix}{key}"] = value
    return found


def _override(key: str, value: Any) -> str:
    """``key=value`` with the value as YAML reads it back (strings as they are, the rest as JSON)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def _patch_crop(model: torch.nn.Module, crop: int, key: str) -> int:
    """The smallest crop >= ``crop`` whose feature grid is a multiple of :data:`PATCH_SIZE`: the
    grid grows by one cell per output-stride pixels, so ``crop + stride * k`` for the k that
    completes the grid, checked on the meta device. ConfigError naming ``key`` otherwise."""
    from cagnet.train.steps import feature_grid

    grid = feature_grid(model, (crop, crop))
    stride = getattr(model.backbone, "output_stride", None)
    if isinstance(stride, int) and grid[0] == grid[1]:
        candidate = crop + stride * ((-grid[0]) % PATCH_SIZE)
        if all(g % PATCH_SIZE == 0 for g in feature_grid(model, (candidate, candidate))):
            return candidate
    raise ConfigError(f"CaGNetv2: cannot derive a patch-wise crop from {key} {crop} (feature grid "
                      f"{grid[0]}x{grid[1]}, output stride {stride}); set one whose grid is a multiple of "
                      f"{PATCH_SIZE} in the config")


def patchwise_overrides(config: TrainConfig, patch_bank: str | None = None) -> tuple[str, ...]:
    """``key=value`` overrides that turn the pixel-wise ``config`` into its CaGNetv2 form, the
    config of the ``CaGNetv2`` / ``CaGNetv2+ST`` rows:

    * ``model.patch_size=3`` (the 3x3 patch classifier everywhere);
    * ``data.crop_size`` and the step-2 schedules' own ``crop_size`` (``mixed``, ``st_mixed``,
      where set): the smallest crop at or above the config's whose feature grid is a multiple
      of 3 (patch-wise step 2 tiles 3x3 label blocks; a larger crop never cuts more of an
      image): tutorial 128 -> 136, voc12 368 -> 376;
    * for a config named after a packaged one ``X`` with a packaged ``X_pa3`` (``tutorial``,
      ``voc12``, ``context``, ``cocostuff``): every other value in which ``X_pa3`` differs from
      ``X``, as it is there (voc12: step-1 batch 4; the step-2 block source, e.g. ``block_source:
      bank`` with ``bank_path: null``, the config's own bank, which training builds when missing
      from the ``patches`` section that describes it). So the packaged ``X`` gives exactly
      ``X_pa3``.
    * ``patch_bank``: None = the block source so derived (pure one-class blocks unless ``X_pa3``
      says ``bank``); ``"pure"`` = pure one-class blocks; a path = that bank of label blocks
      (:func:`cagnet.data.blocks.load_label_blocks`) in both step-2 schedules.

    A patch-wise ``config`` (``model.patch_size`` > 1) or a crop without a fitting grid is a
    one-line ConfigError.
    """
    from cagnet.models import build_cagnet

    if config.model.patch_size != 1:
        raise ConfigError(f"CaGNetv2 rows: config {config.name!r} is patch-wise already (model.patch_size "
                          f"{config.model.patch_size}): its CaGNet rows are CaGNetv2's; run them on the pixel-wise "
                          "config")
    model = build_cagnet(config.model, device="meta")   # shapes only: the feature grid of a crop
    overrides = {"model.patch_size": PATCH_SIZE,
                 "data.crop_size": _patch_crop(model, config.data.crop_size, "data.crop_size")}
    for name in _BLOCK_SCHEDULES:
        section = getattr(config.schedules, name)
        if section is not None and section.crop_size is not None:
            key = f"schedules.{name}.crop_size"
            overrides[key] = _patch_crop(model, section.crop_size, key)
    if config.name in PACKAGED_CONFIGS and f"{config.name}_pa3" in PACKAGED_CONFIGS:
        differences = _differences(to_dict(load_train_config(config.name)),
                                   to_dict(load_train_config(f"{config.name}_pa3")))
        for key, value in differences.items():
            if key != "name" and not key.endswith("crop_size") and key not in overrides:
                overrides[key] = value
    if patch_bank is not None:
        bank = str(patch_bank).strip()
        if not bank:
            raise ConfigError("patch bank: expected a file of label blocks or 'pure', got an empty value")
        for name in _BLOCK_SCHEDULES:
            if getattr(config.schedules, name) is not None:
                overrides[f"schedules.{name}.block_source"] = "pure" if bank == "pure" else "bank"
                overrides[f"schedules.{name}.bank_path"] = None if bank == "pure" else bank
    return tuple(_override(key, value) for key, value in overrides.items())


def patchwise_config(config: TrainConfig, patch_bank: str | None = None) -> TrainConfig:
    """``config`` with :func:`patchwise_overrides`, checked now: a bank file that the step-2
    schedules would read and that is missing is a one-line ConfigError before anything trains
    (this is where a bank built by another command comes in: its path as ``patch_bank``; a
    ``bank_path: null`` names the config's own bank, which training builds when missing)."""
    patch = seed_config(config, config.runtime.seed, patchwise_overrides(config, patch_bank))
    for name in _BLOCK_SCHEDULES:
        section = getattr(patch.schedules, name)
        if (section is not None and section.block_source == "bank" and section.bank_path is not None
                and not Path(section.bank_path).is_file()):
            raise ConfigError(f"CaGNetv2: schedules.{name}.bank_path {section.bank_path}: no such file (a bank of "
                              "label blocks [B, 3, 3], cagnet.data.blocks.save_label_blocks); name another with "
                              "--patch-bank PATH, or train on one-class blocks with --patch-bank pure")
    return patch


class MethodRuns:
    """Trains (or reuses) and scores the comparison methods for one seed of a configuration.

    Args:
        config: the configuration (its schedules set CaGNet's and the baselines' budgets).
        seed: ``runtime.seed`` of every run.
        runs_root: folder of the run folders (see the module docstring).
        split: the scored split, ``test`` or ``validation``.
        held_out: the held-out training images of the calibrated rows when the dataset has no
            validation split (default 10 %, :func:`default_held_out`; SPNet trains without
            them); unused otherwise.
        patch_bank: the block source of the CaGNetv2 rows (:func:`patchwise_overrides`).
    """

    def __init__(self, config: TrainConfig, seed: int, runs_root: str | Path, *, split: str = "test",
                 held_out: int | None = None, patch_bank: str | None = None) -> None:
        from cagnet.data.datasets import has_split
        from cagnet.train.baselines import training_ids
        from cagnet.train.loading import evaluation_dataset, prepare_dataset
        from cagnet.train.distributed import resolve_device

        self.config = seed_config(config, seed)
        self.seed = int(seed)
        self.runs_root = Path(runs_root)
        self.split = split
        self.info = prepare_dataset(self.config)
        self.eval_set = evaluation_dataset(self.config, self.info, split)
        self.device = resolve_device(self.config.runtime.device)
        self.calibration = "validation" if has_split(self.info.root, "validation") else "held_out"
        self.held_out = 0
        if self.calibration == "held_out":
            self.held_out = held_out if held_out is not None else default_held_out(
                len(training_ids(self.config, self.info)))
        self.patch_bank = patch_bank
        self._patchwise: MethodRuns | None = None
        self.models: dict[str, torch.nn.Module] = {}
        #: trained method -> (its model, (calibration, oracle sweep)): see :meth:`_calibration`
        self._calibrations: dict[str, tuple[torch.nn.Module, tuple[dict[str, Any], dict[str, Any]]]] = {}
        self.records: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model: torch.nn.Module, seen_penalty: float = 0.0, dataset=None, *,
                 return_confusion: bool = False) -> dict[str, Any]:
        """Scores of ``model`` on the scored split (or ``dataset``), ``original`` protocol (with
        ``return_confusion``, also the pixel counts under ``confusion``)."""
        from cagnet.evaluate import evaluate

        cfg = self.config
        with torch_threads(cfg.runtime.num_threads):
            return evaluate(model, self.eval_set if dataset is None else dataset, self.info, "original",
                            test_size=cfg.data.test_size, batch_size=cfg.data.test_batch_size, device=self.device,
                            amp=cfg.runtime.amp, seen_penalty=seen_penalty, return_confusion=return_confusion)

    # ------------------------------------------------------------------ CaGNet
    def cagnet_folder(self, schedule: str) -> Path:
        """The engine run folder of ``schedule`` for this configuration and seed."""
        from cagnet.train.runs import run_recipe

        return self.runs_root / "cagnet" / f"{schedule}-{recipe_digest(run_recipe(to_dict(self.config), schedule))}"

    def cagnet_run(self, schedule: str, *, retrain: bool = False, progress: bool = False,
                   verbose: bool = False) -> Path:
        """The folder of a finished run of ``schedule``: reused when it holds the finished run of this
        recipe, else trained now, after the runs it starts from (step1 -> mixed -> st -> st_mixed,
        each from the previous one's checkpoint). ``retrain`` trains ``schedule`` itself again."""
        from cagnet.config import SCHEDULE_NAMES
        from cagnet.train.checkpoint import CHECKPOINT_NAME
        from cagnet.train.engine import train
        from cagnet.train.runs import finished_run

        previous = None
        for name in SCHEDULE_NAMES[:SCHEDULE_NAMES.index(schedule) + 1]:
            folder = self.cagnet_folder(name)
            if (retrain and name == schedule) or not finished_run(folder, name, self.config):
                init = None if previous is None else previous / CHECKPOINT_NAME
                # the folder is named after the recipe: what it holds is an unfinished or replaced run of it
                train(self.config, name, folder, init_model=init, progress=progress, verbose=verbose, force=True)
                self.models.pop(name, None)
            previous = folder
        return previous

    def cagnet_model(self, schedule: str) -> torch.nn.Module:
        """The CaGNet model after ``schedule`` (:meth:`cagnet_run`), in eval mode on the device."""
        from cagnet.train.runs import load_run_model

        if schedule not in self.models:
            self.models[schedule] = load_run_model(self.cagnet_run(schedule), self.config, self.device)
        return self.models[schedule]

    def cagnet(self, method: str = "CaGNet") -> torch.nn.Module:
        """The trained CaGNet: ``CaGNet`` after step1 -> mixed, ``CaGNet+ST`` after -> st -> st_mixed;
        ``CaGNetv2`` / ``CaGNetv2+ST`` the same on the patch-wise config (:meth:`patchwise`)."""
        if method in PATCHWISE_METHODS:
            return self.patchwise().cagnet(PATCHWISE_METHODS[method])
        return self.cagnet_model(CAGNET_SCHEDULES[method][-1])

    def patchwise(self) -> "MethodRuns":
        """The runs of this seed on :func:`patchwise_config` (same runs root, scored split and
        held-out images), made on first use: the CaGNetv2 rows' CaGNet runs."""
        if self._patchwise is None:
            self._patchwise = MethodRuns(patchwise_config(self.config, self.patch_bank), self.seed, self.runs_root,
                                         split=self.split, held_out=self.held_out if self.held_out else None)
        return self._patchwise

    def run_folder(self, method: str) -> Path:
        """The run folder holding the model of ``method`` (a calibrated row: its trained method's):
        a baseline's folder, or the last engine run folder of a CaGNet method."""
        method = trained_method(check_methods([method])[0])
        if method in PATCHWISE_METHODS:
            return self.patchwise().run_folder(PATCHWISE_METHODS[method])
        if method in CAGNET_SCHEDULES:
            return self.cagnet_folder(CAGNET_SCHEDULES[method][-1])
        return self._baseline_folder({"SPNet": "spnet", "ZS3Net": "zs3net", "ZS3Net+ST": "zs3net_st"}[method])[0]

    # ------------------------------------------------------------------ baselines
    def _baseline_folder(self, name: str) -> tuple[Path, dict[str, Any]]:
        from cagnet.train.baselines import baseline_recipe

        recipe = baseline_recipe(to_dict(self.config), name, self.held_out)
        return self.runs_root / f"{name}-{recipe_digest(recipe)}", recipe

    def _baseline(self, key: str, name: str, build, train) -> torch.nn.Module:
        """A baseline model: loaded from its run folder when that holds the same recipe, else
        trained by ``train()`` and saved there."""
        if key in self.models:
            return self.models[key]
        folder, recipe = self._baseline_folder(name)
        model_path, recipe_path = folder / "model.pt", folder / "recipe.json"
        saved = None
        if model_path.is_file() and recipe_path.is_file():
            try:
                saved = json.loads(recipe_path.read_text())
            except ValueError:
                saved = None
        if saved == json.loads(json.dumps(recipe, default=str)):
            model = build(self.config, self.info, init=False)
            model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
            model.to(self.device).eval()
        else:
            from cagnet.files import atomic_write, atomic_write_text

            model = train()
            atomic_write(model_path, lambda stream: torch.save(model.state_dict(), stream))
            atomic_write_text(recipe_path, json.dumps(recipe, indent=1, default=str))
        self.models[key] = model
        return model

    def spnet(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_spnet, train_spnet

        return self._baseline("SPNet", "spnet", build_spnet,
                              lambda: train_spnet(self.config, seed=self.seed, held_out=self.held_out,
                                                  device=self.device))

    def zs3net(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_zs3net, train_zs3net

        return self._baseline("ZS3Net", "zs3net", build_zs3net,
                              lambda: train_zs3net(self.config, seed=self.seed, device=self.device))

    def zs3net_st(self) -> torch.nn.Module:
        from cagnet.train.baselines import build_zs3net, self_train_zs3net

        return self._baseline("ZS3Net+ST", "zs3net_st", build_zs3net,
                              lambda: self_train_zs3net(self.config, self.zs3net(), seed=self.seed,
                                                        device=self.device))

    def model(self, method: str) -> torch.nn.Module:
        """The trained model of ``method`` (a calibrated row, e.g. ``CaGNet-c``: the model of its
        trained method, ``CaGNet``; its penalty is :meth:`penalty`)."""
        method = trained_method(check_methods([method])[0])
        if method == "SPNet":
            return self.spnet()
        if method == "ZS3Net":
            return self.zs3net()
        if method == "ZS3Net+ST":
            return self.zs3net_st()
        return self.cagnet(method)

    def _calibration(self, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the calibration of :meth:`penalty`, the oracle sweep on the scored split with the
        chosen penalty among its penalties and confusion matrices), computed once per trained
        model (:meth:`penalty` and :meth:`run` of a calibrated row share it; a retrained model
        is another object and is calibrated again)."""
        method = trained_method(check_methods([method])[0])
        model = self.model(method)
        cached = self._calibrations.get(method)
        if cached is None or cached[0] is not model:
            self._calibrations[method] = (model, self._calibrate(method, model))
        return self._calibrations[method][1]

    def _calibrate(self, method: str, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
        from cagnet.evaluate import calibration_sweep, held_out_calibration
        from cagnet.train.baselines import held_out_dataset
        from cagnet.train.loading import evaluation_dataset

        cfg = self.config
        options = dict(test_size=cfg.data.test_size, batch_size=cfg.data.test_batch_size, device=self.device,
                       amp=cfg.runtime.amp)
        with torch_threads(cfg.runtime.num_threads):
            oracle = None
            if self.calibration == "validation":
                if self.split == "validation":   # the oracle curve is the validation curve
                    oracle = chosen = calibration_sweep(model, self.eval_set, self.info, return_confusion=True,
                                                        **options)
                else:
                    chosen = calibration_sweep(model, evaluation_dataset(cfg, self.info, "validation"), self.info,
                                               **options)
                details = {"hiou": chosen["hiou"], "seen_miou": chosen["seen_miou"],
                           "unseen_miou": chosen["unseen_miou"]}
            else:
                chosen = held_out_calibration(model, held_out_dataset(cfg, self.info, self.held_out), self.info,
                                              **options)
                details = {"seen_acc": chosen["seen_acc"], "unseen_rate": chosen["unseen_rate"],
                           "balance": chosen["balance"], "held_out_images": self.held_out,
                           # only SPNet is trained without the held-out images
                           "trained_on_calibration_images": method != "SPNet"}
            if oracle is None:
                oracle = calibration_sweep(model, self.eval_set, self.info, include=[chosen["best_penalty"]],
                                           return_confusion=True, **options)
        calibration = {"method": calibrated_method(method), "seen_penalty": chosen["best_penalty"],
                       "calibration": self.calibration, "best_at_edge": chosen["best_at_edge"],
                       "penalties": chosen["penalties"], "unseen_share": chosen["unseen_share"], **details,
                       "oracle_penalty": oracle["best_penalty"],
                       "oracle_hiou": oracle["best"]["hiou"] if oracle["best"] is not None else None}
        return calibration, oracle

    def penalty(self, method: str) -> dict[str, Any]:
        """The seen-class penalty of ``method``'s calibrated row (``CaGNet`` or ``CaGNet-c``: the
        same) and how it was chosen (see the module docstring): ``seen_penalty``, ``calibration``
        (``validation`` / ``held_out``), ``best_at_edge``, the sweep's values (``penalties``,
        ``unseen_share`` and ``hiou`` ... or ``seen_acc`` / ``unseen_rate`` / ``balance``), and the
        oracle penalty / hIoU on the scored split."""
        return self._calibration(method)[0]

    # ------------------------------------------------------------------ one table row
    def run(self, method: str) -> dict[str, Any]:
        """Train (or reuse) ``method`` and score it on the split: the table's scores, where the
        seen / unseen boundary costs them (:func:`cagnet.metrics.seen_unseen_confusion`),
        ``class_iou``, ``num_images``, ``seconds``; a calibrated row also its penalty and how it was
        chosen (``seen_penalty``, ``calibration``, ``held_out_images``, ``best_at_edge``,
        ``oracle_penalty``, ``oracle_hiou``; on held-out images ``trained_on_calibration_images``),
        also written to ``calibration.json`` in :meth:`run_folder`."""
        from cagnet.files import atomic_write_text

        method = check_methods([method])[0]
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        model = self.model(method)
        if method.endswith(CALIBRATED_SUFFIX):
            calibration, oracle = self._calibration(method)
            penalty = calibration["seen_penalty"]
            # the scored split's scores at the chosen penalty: from the oracle sweep's forward pass
            scores = oracle["scores"][oracle["penalties"].index(penalty)]
            extra = {key: calibration[key] for key in ("seen_penalty", "calibration", "best_at_edge", "oracle_penalty",
                                                       "oracle_hiou", "trained_on_calibration_images")
                     if key in calibration}
            extra["held_out_images"] = self.held_out
            atomic_write_text(self.run_folder(method) / "calibration.json", json.dumps(json_safe(calibration), indent=1))
        else:
            scores = self.evaluate(model, return_confusion=True)
        num_seen, num_classes = self.info.num_seen, scores["confusion"].shape[0]
        boundary = seen_unseen_confusion(scores["confusion"], range(num_seen), range(num_seen, num_classes))
        record = {**table_record(scores), **boundary, **extra, "class_iou": list(scores["class_iou"]),
                  "num_images": scores["num_images"], "seconds": time.perf_counter() - started}
        self.records[method] = record
        return record


# ------------------------------------------------------------------------------ many seeds
@dataclass(frozen=True)
class Task:
    """One row to compute per seed: ``method`` trained with ``config`` plus ``overrides``
    (``key=value`` strings), reported under ``name``; ``diagnostics`` adds the measurements of
    :func:`cagnet.diagnostics.context_diagnostics` (CaGNet methods only)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    diagnostics: bool = False


def run_task(runs: MethodRuns, task: Task) -> dict[str, Any]:
    """The record of ``task`` on an already configured :class:`MethodRuns`."""
    record = runs.run(task.method)
    if task.diagnostics and task.method in CAGNET_SCHEDULES:   # not the calibrated rows: the same model
        from cagnet.diagnostics import context_diagnostics

        with torch_threads(runs.config.runtime.num_threads):
            record["diagnostics"] = context_diagnostics(runs.model(task.method), runs.eval_set, runs.info,
                                                        seed=runs.seed, device=runs.device)
    return record


class _SeedTasks:
    """The tasks of one seed in order; one :class:`MethodRuns` per distinct override list."""

    def __init__(self, config: TrainConfig, seed: int, runs_root: Path, split: str, held_out: int | None,
                 patch_bank: str | None = None) -> None:
        self.config, self.seed, self.runs_root, self.split, self.held_out = config, seed, runs_root, split, held_out
        self.patch_bank = patch_bank
        self.runs: dict[tuple[str, ...], MethodRuns] = {}

    def runs_for(self, overrides: tuple[str, ...]) -> MethodRuns:
        if overrides not in self.runs:
            # no periodic evaluation: the rows are scored once, at the end
            config = seed_config(self.config, self.seed, (*overrides, "runtime.eval_interval=0"))
            self.runs[overrides] = MethodRuns(config, self.seed, self.runs_root, split=self.split,
                                              held_out=self.held_out, patch_bank=self.patch_bank)
        return self.runs[overrides]

    def run(self, task: Task) -> dict[str, Any]:
        return run_task(self.runs_for(task.overrides), task)

    def facts(self) -> dict[str, Any]:
        """What a table records of the seed's runs besides the scores (from the first runs)."""
        runs = next(iter(self.runs.values()))
        return {"config": runs.config, "held_out": runs.held_out, "calibration": runs.calibration,
                "class_names": list(runs.info.eval_class_names), "num_seen": runs.info.num_seen,
                "num_unseen": runs.info.num_unseen}


def _seed_worker(config_data: dict[str, Any], seed: int, runs_root: str, tasks: Sequence[Task], split: str,
                 held_out: int | None, patch_bank: str | None, threads: int | None, events: Any = None
                 ) -> dict[str, Any]:
    """One seed's records, in a worker process of :func:`run_seeds` (``jobs > 1``); puts
    ``(seed, name, None)`` when a task starts and ``(seed, name, hiou)`` when it is done on the
    ``events`` queue."""
    config = train_config_from_dict(config_data)
    if threads:
        config = seed_config(config, config.runtime.seed, [f"runtime.num_threads={threads}"])
    seed_tasks = _SeedTasks(config, seed, Path(runs_root) / str(seed), split, held_out, patch_bank)
    records = {}
    for task in tasks:
        if events is not None:
            events.put((seed, task.name, None))
        records[task.name] = seed_tasks.run(task)
        if events is not None:
            events.put((seed, task.name, records[task.name]["hiou"]))
    return {"records": records, **seed_tasks.facts()}


def worker_threads(config: TrainConfig, jobs: int) -> int | None:
    """Threads per worker process: the config's, else the cores shared out (at least 1), so that
    parallel seeds do not oversubscribe the CPU (which slows convolutions down many times)."""
    if config.runtime.num_threads:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def run_seeds(config: TrainConfig, seeds: Sequence[int], runs_root: str | Path, tasks: Sequence[Task], *,
              split: str = "test", held_out: int | None = None, patch_bank: str | None = None, jobs: int = 1,
              progress: bool = True, desc: str = "runs") -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every task for every seed: ``({str(seed): {task name: record}}, facts of the first seed)``.

    The run folders of seed ``s`` are in ``runs_root/<s>``. ``jobs`` seeds run at the same time,
    each in its own process (CPU: with ``runtime.num_threads`` unset, each gets ``cores // jobs``
    threads); every record depends on its seed only, so the results are those of ``jobs=1``.
    A progress bar over (task, seed) names the running ones. ``held_out`` and ``patch_bank``
    are :class:`MethodRuns`'s; with a CaGNetv2 task, the patch-wise config is derived (and a
    missing bank reported) before anything trains.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError(f"{desc}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{desc}: duplicate seeds {seeds}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{desc}: jobs must be a positive integer, got {jobs!r}")
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{desc}: duplicate row names {names}")
    runs_root = Path(runs_root)
    for overrides in dict.fromkeys(task.overrides for task in tasks if trained_method(task.method) in PATCHWISE_METHODS):
        patchwise_config(seed_config(config, config.runtime.seed, overrides), patch_bank)
    if jobs == 1:
        return _run_sequential(config, seeds, runs_root, tasks, split, held_out, patch_bank, progress, desc)
    return _run_parallel(config, seeds, runs_root, tasks, split, held_out, patch_bank, jobs, progress, desc)


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)


def _run_sequential(config, seeds, runs_root, tasks, split, held_out, patch_bank, progress, desc):
    bar = _bar(len(seeds) * len(tasks), desc, progress)
    per_seed: dict[str, dict[str, Any]] = {}
    facts = None
    try:
        for seed in seeds:
            seed_tasks = _SeedTasks(config, seed, runs_root / str(seed), split, held_out, patch_bank)
            for task in tasks:
                if bar is not None:
                    bar.set_description(f"{task.name} (seed {seed})")
                record = per_seed.setdefault(str(seed), {})[task.name] = seed_tasks.run(task)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(hIoU=f"{100 * record['hiou']:.1f}")
            facts = facts or seed_tasks.facts()
    finally:
        if bar is not None:
            bar.close()
    return per_seed, facts


def _run_parallel(config, seeds, runs_root, tasks, split, held_out, patch_bank, jobs, progress, desc):
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = worker_threads(config, jobs)
    # spawn: a fresh interpreter per worker (fork would copy torch's thread pools and locks)
    context = multiprocessing.get_context("spawn")
    bar = _bar(len(seeds) * len(tasks), desc, progress)
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=min(jobs, len(seeds)),
                                                           mp_context=context) as pool:
        events = manager.Queue() if bar is not None else None
        futures = {pool.submit(_seed_worker, to_dict(config), seed, str(runs_root), tuple(tasks), split, held_out,
                               patch_bank, threads, events): seed for seed in seeds}
        running: dict[int, str] = {}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a worker's error stops everything here
                while events is not None:
                    try:
                        seed, name, hiou = events.get_nowait()
                    except queue_module.Empty:
                        break
                    if hiou is None:
                        running[seed] = name
                    else:
                        running.pop(seed, None)
                        bar.update(1)
                        bar.set_postfix_str(f"last: {name} (seed {seed}) hIoU {100 * hiou:.1f}")
                    bar.set_description(", ".join(f"{n} (seed {s})" for s, n in sorted(running.items())) or desc)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
        results = {futures[future]: future.result() for future in futures}
    per_seed = {str(seed): results[seed]["records"] for seed in seeds}
    facts = {k: v for k, v in results[seeds[0]].items() if k != "records"}
    return per_seed, facts
