"""The training loop: schedules, logging, periodic evaluation, figures and checkpoints.

:func:`train` runs one schedule of a :class:`~cagnet.config.TrainConfig`:

``step1``     every iteration is a step-1 iteration (backbone, contextual module, generator,
              discriminator; :func:`cagnet.train.steps.step1`);
``mixed``     ``interval_step1`` step-1 iterations, then ``interval_step2`` step-2
``st_mixed``  iterations (:func:`cagnet.train.steps.step2`), repeated, starting with ``first``;
``st``        self-training: pseudo-labels for ignored pixels, then step 1 on them.

With ``model.patch_size`` > 1 (CaGNetv2) step 2 is patch-wise: tiled label blocks from the
schedule's ``block_source`` (:func:`cagnet.train.steps.step2_block_source`, read at set-up).

A run folder (default ``runs/<config name>/<schedule>``) receives the resolved configuration,
a log of every iteration, the scores of every evaluation, the latest checkpoint and figures
(:mod:`cagnet.train.runs`).

``--resume`` continues from ``checkpoint.pt`` exactly: model, optimiser states, gradient
scaler, RNG states of every process and the data position are restored, so an interrupted
and resumed run ends with the same weights as an uninterrupted one (on the same hardware
and thread count). Resuming a finished run does nothing and says so.

A run folder has one writer (:class:`~cagnet.train.runs.RunLock`, held for the run's lifetime);
a folder that holds a run is not trained into afresh without ``force``; a schedule whose
upstream run (``init_from``) stopped before its last iteration refuses to start from it
unless ``allow_unfinished_start``; temporary files of an interrupted checkpoint write are
removed at the next start.

The host does not wait for the device during an iteration: the losses stay on the device
and are read back, checked and logged once per block, at every ``runtime.log_interval``-th
iteration and before every checkpoint, evaluation and the end of the run (the ``st``
schedule also waits once per iteration for its pseudo-labels, and ``amp: fp16`` for its
gradient scaler). A non-finite loss stops training at the next check with
:class:`NonFiniteLossError`, naming the loss and its iteration: the updates made since the
last check are dropped, not skipped on the device (that would cost a copy of the weights
and optimiser states per iteration), so the weights in memory are not saved and the run
falls back to the last checkpoint, which a check always precedes; a checkpoint is never
written from weights updated by a non-finite loss (nor from non-finite weights). At most
``log_interval`` iterations are lost, and ``--resume`` continues from that checkpoint.

Iterations whose batch has no labelled pixel on some feature grid are skipped without
counting, as in the original.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from cagnet.config import TrainConfig
from cagnet.config_io import to_dict
from cagnet.files import atomic_write_text
from cagnet.errors import CagnetError, CheckpointError, ConfigError, DatasetError, RunFolderError
from cagnet.models import check_input_normalization, load_checkpoint
from cagnet.models.backbone import NOMINAL_INPUT_STD, stable_random_init
from cagnet.runtime import copy_to_device, cudnn_autotune, notes_stream, seed_everything, torch_threads
from cagnet.train import checkpoint as ckpt
from cagnet.train.batches import mix_seed, training_batches
from cagnet.train.loading import (build_model, evaluation_dataset, prepare_dataset, resolve_eval_split,
                                  training_dataset)
from cagnet.train.distributed import (DistContext, all_reduce_mean, any_process, barrier, gather_objects,
                                      setup_distributed, sync_buffers, teardown_distributed, wrap_parts)
from cagnet.train.optim import apply_learning_rates, build_optimizers
from cagnet.train.runs import (JsonLines, RunLock, default_out_dir, read_jsonl, remove_stale_temporaries,
                              truncate_after, write_run_figures)
from cagnet.train import steps

#: Consecutive batches without labelled pixels after which training gives up.
MAX_CONSECUTIVE_SKIPS = 50


class NonFiniteLossError(CagnetError, FloatingPointError):
    """A loss (or a weight) became NaN or infinite; training stopped without saving the weights
    updated from it."""


@dataclass
class _PendingRecord:
    """An iteration whose losses are still on the device (read back at the next check)."""

    iteration: int
    kind: str
    names: list[str]
    values: torch.Tensor
    rates: dict[str, float]
    skipped_batches: int


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``completed``: all iterations ran (False when stopped by ``stop_at``). ``scores``: the
    final evaluation (original protocol), None when stopped early or on other ranks.
    ``model``: the trained :class:`~cagnet.models.CaGNet` (on the training device, eval mode).
    ``rank``: this process's rank (0 when not distributed).
    """

    out_dir: Path
    checkpoint: Path
    iteration: int
    completed: bool
    scores: dict[str, Any] | None
    model: torch.nn.Module
    rank: int = 0


def step_kind(schedule: str, config, iteration: int) -> str:
    """``step1``, ``step2`` or ``st`` for the 0-based ``iteration`` of a schedule."""
    if schedule == "step1":
        return "step1"
    if schedule == "st":
        return "st"
    cycle = iteration % (config.interval_step1 + config.interval_step2)
    if config.first == "step1":
        return "step1" if cycle < config.interval_step1 else "step2"
    return "step2" if cycle < config.interval_step2 else "step1"


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    return None if a == b else where or "<root>"


class Trainer:
    """One schedule of one config; see :func:`train` for the arguments."""

    def __init__(self, config: TrainConfig, schedule: str, out_dir: str | Path | None = None, *,
                 init_model: str | Path | None = None, resume: bool = False, stop_at: int | None = None,
                 progress: bool | None = None, verbose: bool = True, force: bool = False,
                 allow_unfinished_start: bool = False) -> None:
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 1):
            raise ConfigError(f"--stop-at: must be a positive iteration, got {stop_at!r}")
        self.config = config
        self.schedule_name = schedule
        self.schedule = config.schedule(schedule)
        self.runtime = config.runtime
        self.stop_at = stop_at
        self.progress = self.runtime.progress if progress is None else progress
        self.out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config, schedule)
        self.ctx: DistContext = setup_distributed(self.runtime.device, self.runtime.dist_backend)
        self.verbose = verbose and self.ctx.is_main
        self.force, self.allow_unfinished_start = force, allow_unfinished_start
        self.lock: RunLock | None = None
        self.log = self.eval_log = None
        self.already_finished: dict[str, Any] | None = None   # the final evaluation of a finished run resumed
        # torch threads, subnormal flushing and cuDNN autotuning for the whole run; restored
        # by run() or a failed set-up
        self._settings = contextlib.ExitStack()
        self._settings.enter_context(torch_threads(self.runtime.num_threads))
        if self.ctx.device.type == "cuda":
            self._settings.enter_context(cudnn_autotune(self.runtime.cudnn_benchmark is not False))
        try:
            self._setup(init_model, resume)
        except BaseException:
            self._close_outputs()
            self._settings.close()
            teardown_distributed(self.ctx)
            raise

    # ------------------------------------------------------------------ set-up
    def say(self, message: str) -> None:
        if self.verbose:
            from tqdm.auto import tqdm

            tqdm.write(message, file=notes_stream())

    def _setup(self, init_model, resume: bool) -> None:
        cfg, runtime, ctx, sched = self.config, self.runtime, self.ctx, self.schedule
        device = ctx.device
        if runtime.amp == "fp16" and device.type != "cuda":
            raise ConfigError(f"runtime.amp: fp16 needs a CUDA device (running on {device.type}); use bf16 or none")
        self.amp = runtime.amp
        seed_everything(runtime.seed)  # same model initialisation on every process
        if ctx.enabled:
            import torch.distributed as dist

            self.say(f"distributed: {ctx.world_size} process(es), {dist.get_backend()} backend, device {device}")

        # data and model
        if ctx.is_main:
            self.info = prepare_dataset(cfg, progress=self.progress)
        barrier(ctx)
        if not ctx.is_main:
            self.info = prepare_dataset(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic=None)))
        info = self.info
        num_outputs = info.num_seen + info.num_unseen + 1
        if self.schedule_name == "st" and sched.top_p > num_outputs:   # only self-training ranks classes
            raise ConfigError(f"schedules.{self.schedule_name}.top_p: {sched.top_p} exceeds the "
                              f"{num_outputs} classifier outputs")
        self.model = build_model(cfg, info)
        # patch-wise step 2 (model.patch_size > 1): the crop's grid and the block bank are
        # checked (one-line errors) before the run folder is touched
        self.block_source = steps.step2_block_source(cfg, self.schedule_name, self.model,
                                                     info.num_seen + info.num_unseen, device,
                                                     bank_path=self._cached_bank())

        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.out_dir / ckpt.CHECKPOINT_NAME
        if ctx.is_main:   # one writer per folder, from here to the end of run()
            self.lock = RunLock(self.out_dir).acquire()
            freed = remove_stale_temporaries(self.out_dir)
            if freed:
                self.say(f"note: removed {freed / 2 ** 20:.1f} MiB of temporary files an interrupted write left "
                         f"in {self.out_dir}")
        self.config_data = to_dict(cfg)
        payload = None
        if resume:
            payload = ckpt.load_training_checkpoint(self.checkpoint_path) if self.checkpoint_path.is_file() else None
            if payload is None:
                raise CheckpointError(f"--resume: no checkpoint in {self.out_dir} "
                                      f"({self.checkpoint_path.name} missing)")
            self._check_resumable(payload)
            # shapes and keys checked first: a CheckpointError naming the file, not a traceback
            load_checkpoint(self.model, payload["state_dict"], name=str(self.checkpoint_path))
        else:
            if self.checkpoint_path.is_file() and not self.force:
                self._refuse_replacing()
            self._load_initial_weights(init_model)

        self.model.to(device)
        self.channels_last = runtime.channels_last if runtime.channels_last is not None else device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizers = build_optimizers(self.model, cfg.optim, sched)   # may freeze the gate conv
        self._set_train_mode()
        self.parts = wrap_parts(self.model, ctx, train_backbone=sched.update_backbone)
        if runtime.compile:
            self.parts = dataclasses.replace(self.parts, features=torch.compile(self.parts.features),
                                             generator=torch.compile(self.parts.generator),
                                             discriminator=torch.compile(self.parts.discriminator))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")

        # data
        self.crop_size = sched.crop_size or cfg.data.crop_size
        self.batch_size = sched.batch_size or cfg.data.batch_size
        train_set = training_dataset(cfg, info, self.crop_size)
        self.batches = training_batches(train_set, self.batch_size, cfg.data.num_workers, runtime.seed, ctx.rank,
                                        ctx.world_size, device, cfg.data.preload)
        self.eval_split = resolve_eval_split(cfg.data.eval_split, info)
        self.eval_set = evaluation_dataset(cfg, info, self.eval_split)
        self.grids = steps.step1_grids(self.model, (self.crop_size, self.crop_size))
        # on the device once: a per-iteration copy from the host would wait for the device
        self.prior = steps.unseen_prior(info.num_seen, info.num_unseen, sched.gen_unseen_rate).to(device,
                                                                                                  torch.float32)
        self.skipped_batches = 0
        self._pending: list[_PendingRecord] = []   # iterations not checked yet (see _check_and_log)
        self._bar = None
        self._block_start = time.perf_counter()

        if payload is not None:
            self.iteration = payload["iteration"]
            self.optimizers.load_state_dict(payload["optimizers"])
            self.scaler.load_state_dict(payload["grad_scaler"])
            self.batches.seek(payload["data"]["epoch"], payload["data"]["batch"])
            self.skipped_batches = payload["data"].get("skipped_batches", 0)
            states = payload["rng"]
            if len(states) == ctx.world_size:
                ckpt.restore_rng_state(states[ctx.rank])
            else:
                self.say(f"note: checkpoint from {len(states)} process(es), running {ctx.world_size}: "
                         "random streams are reseeded, the continuation is not bit-identical")
                self._seed_process(runtime.seed + self.iteration)
        else:
            self.iteration = 0
            self._seed_process(runtime.seed)

        if ctx.is_main:
            atomic_write_text(self.out_dir / "config.yaml",
                              yaml.safe_dump({"schedule": self.schedule_name, **self.config_data}, sort_keys=False))
            fresh = payload is None
            if not fresh:   # also repairs a torn last line
                for name in ("log.jsonl", "eval.jsonl"):
                    truncate_after(self.out_dir / name, self.iteration)
            elif self.checkpoint_path.is_file():
                self.say(f"note: replacing the run in {self.out_dir} (--force)")
            self.log = JsonLines(self.out_dir / "log.jsonl", truncate=fresh)
            self.eval_log = JsonLines(self.out_dir / "eval.jsonl", truncate=fresh)
        barrier(ctx)
        if payload is not None:   # every process decides alike whether anything is left to do
            self.already_finished = self._final_evaluation()
            if self.already_finished is not None:
                self.say(f"note: {self.out_dir} holds a finished run of {self.schedule_name} (iteration "
                         f"{self.iteration}); nothing to resume")

    def _seed_process(self, seed: int) -> None:
        """Per-process streams for dropout, latent noise and step-2 labels."""
        seed_everything(mix_seed(seed, self.ctx.rank, 7919) % (2 ** 63))

    def _check_resumable(self, payload: dict) -> None:
        if payload.get("schedule") != self.schedule_name:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} is from schedule {payload.get('schedule')!r}, "
                                  f"not {self.schedule_name!r}")
        saved_config = payload.get("config", {})
        saved = {k: v for k, v in saved_config.items() if k != "runtime"}
        current = {k: v for k, v in self.config_data.items() if k != "runtime"}
        differing = _first_difference(saved, current)
        if differing:
            raise ConfigError(f"--resume: the config differs from the checkpoint's at {differing!r} "
                              f"(only runtime.* other than the seed may change when resuming)")
        saved_seed = (saved_config.get("runtime") or {}).get("seed")
        if saved_seed != self.runtime.seed:   # the seed names the run (run_recipe): a resumed run keeps it
            raise ConfigError(f"--resume: runtime.seed is {self.runtime.seed}, the checkpoint's run has seed "
                              f"{saved_seed} (a run keeps its seed; train another seed into another --out)")
        if payload.get("iteration", 0) > self.schedule.iterations:
            raise CheckpointError(f"checkpoint {self.checkpoint_path}: iteration {payload.get('iteration')} is past "
                                  f"the schedule's {self.schedule.iterations} iterations")

    def _refuse_replacing(self) -> None:
        """A folder that holds a run is not trained into afresh without ``force``."""
        try:
            saved = ckpt.load_training_checkpoint(self.checkpoint_path)
        except CheckpointError:
            what = "a checkpoint"
        else:
            iteration = saved.get("iteration")
            total = ((saved.get("config") or {}).get("schedules") or {}).get(saved.get("schedule"), {})
            total = total.get("iterations") if isinstance(total, dict) else None
            state = "finished" if iteration == total else f"stopped at iteration {iteration} of {total}"
            what = f"a {state} run of {saved.get('schedule')}"
        raise RunFolderError(f"{self.out_dir}: holds {what}; pass --resume to continue it or --force to replace it")

    def _final_evaluation(self) -> dict[str, Any] | None:
        """The final evaluation record when the resumed checkpoint is the schedule's last iteration
        and ``eval.jsonl`` holds its evaluation (a finished run), else None."""
        if self.iteration < self.schedule.iterations:
            return None
        records = read_jsonl(self.out_dir / "eval.jsonl", report=None)
        if records and records[-1].get("iteration") == self.iteration:
            return records[-1]
        return None

    def _cached_bank(self) -> str | None:
        """The config's own bank (:func:`cagnet.patches.ensure_bank`: built by the main process
        when missing) when this schedule tiles blocks of a bank with ``bank_path: null``; else None.
        The run's recipe keeps ``bank_path: null``: the ``patches`` section and the dataset in it
        decide the bank."""
        from cagnet.config import SCHEDULE_KEYS_READ_BY

        sched, cfg = self.schedule, self.config
        if (cfg.model.patch_size == 1 or self.schedule_name not in SCHEDULE_KEYS_READ_BY["block_source"]
                or sched.block_source != "bank" or sched.bank_path is not None or cfg.patches is None):
            return None
        from cagnet.patches import cached_bank_path, ensure_bank

        path = ensure_bank(cfg, progress=self.progress) if self.ctx.is_main else None
        barrier(self.ctx)
        return str(path if path is not None else cached_bank_path(cfg))

    def _load_initial_weights(self, init_model) -> None:
        from cagnet.pretrain import PRETRAINED, ensure_pretrained, pretrained_path

        sched = self.schedule
        source = init_model or sched.init_model
        if source is not None and str(source) == PRETRAINED:
            if self.ctx.is_main:  # built once, then read by every process
                ensure_pretrained(self.config, progress=self.progress)
            barrier(self.ctx)
            source = pretrained_path(self.config)
        if source is None and sched.init_from is not None:
            source = self.out_dir.parent / sched.init_from / ckpt.CHECKPOINT_NAME
            if not Path(source).is_file():
                raise CheckpointError(f"schedule {self.schedule_name} starts from the {sched.init_from} model, "
                                      f"but {source} does not exist (train --schedule {sched.init_from} first, "
                                      f"or pass --init-model PATH)")
            upstream = ckpt.load_training_checkpoint(source)   # read once: checked, then loaded
            self._check_upstream_finished(upstream, source)
            report = load_checkpoint(self.model, upstream, name=str(source))
            check_input_normalization(report, self.config.data.normalization)
            self.say(f"initial weights: {report}")
            return
        if source is None:
            if self.config.model.freeze_bn:
                stable_random_init(self.model.backbone, NOMINAL_INPUT_STD[self.config.data.normalization])
                self.say("warning: no --init-model: the frozen-BN backbone starts from random weights (stable "
                         "initialisation: identity residual blocks, unit-scale stem); CaGNet's published results "
                         "need the pretrained DeepLabV2 weights")
            return
        report = load_checkpoint(self.model, source)
        check_input_normalization(report, self.config.data.normalization)
        self.say(f"initial weights: {report}")

    def _check_upstream_finished(self, upstream: dict, path: Path) -> None:
        """Refuse an upstream run that stopped before its last iteration (unless allowed)."""
        name = upstream.get("schedule")
        schedule = ((upstream.get("config") or {}).get("schedules") or {}).get(name)
        total = schedule.get("iterations") if isinstance(schedule, dict) else None
        iteration = upstream.get("iteration")
        if total is None or iteration is None or iteration >= total:
            return
        message = (f"schedule {self.schedule_name} starts from {path}, a run of {name} that stopped at "
                   f"iteration {iteration} of {total}")
        if not self.allow_unfinished_start:
            raise RunFolderError(f"{message}; finish it (train --schedule {name} --resume) or pass "
                                 f"--allow-unfinished-start")
        self.say(f"note: {message} (--allow-unfinished-start)")

    def _set_train_mode(self) -> None:
        """Training mode; a frozen backbone stays in eval mode (its batch-norm statistics too),
        the contextual module keeps sampling its latent code."""
        self.model.train()
        if not self.schedule.update_backbone:
            self.model.backbone.eval()
            self.model.semantic_norm.eval()  # normalises the backbone's output: frozen with it

    # ------------------------------------------------------------------ iterations
    def _labels_ok(self, host_labels: torch.Tensor, grids) -> bool:
        """Whether every grid keeps a labelled pixel on every process (CPU labels: no wait for a GPU)."""
        ok = steps.has_labelled_pixels(host_labels, grids)
        return not any_process(not ok, self.ctx)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next batch whose labels keep a labelled pixel on every step-1 grid (on all processes):
        (images on the device, labels on the device, the same labels on the CPU)."""
        device = self.ctx.device
        for _ in range(MAX_CONSECUTIVE_SKIPS):
            batch = self.batches.next()
            host_labels = batch["label"]
            if self._labels_ok(host_labels, self.grids):
                image = copy_to_device(batch["image"], device)
                if self.channels_last:
                    image = image.contiguous(memory_format=torch.channels_last)
                return image, copy_to_device(host_labels, device), host_labels
            self.skipped_batches += 1
        raise DatasetError(f"{self.info.root}: {MAX_CONSECUTIVE_SKIPS} consecutive training batches without a "
                           "labelled (seen-class) pixel")

    def _run_iteration(self, kind: str) -> steps.StepOutput:
        sched, cfg = self.schedule, self.config
        unseen_embedding = sched.st_unseen_embedding
        if kind == "step2":
            return steps.step2(self.parts, self.batch_size, self.grids[0], self.prior, sched.losses,
                               device=self.ctx.device, amp=self.amp, blocks=self.block_source)
        while True:
            image, labels, host_labels = self._next_batch()
            if kind == "st":
                labels = steps.pseudo_labels(self.model, image, labels, sched.top_p, self.amp)
                # pseudo-labels come from the model: the one wait for the device per st iteration
                host_labels = labels.cpu()
                if not self._labels_ok(host_labels, self.grids):  # pseudo-labels live on the feature grid
                    self.skipped_batches += 1
                    continue
            return steps.step1(self.parts, image, labels, sched.losses, gan_type=cfg.losses.gan_type,
                               mmd_bandwidths=tuple(cfg.losses.mmd_bandwidths),
                               train_backbone=sched.update_backbone, amp=self.amp,
                               unseen_embedding=unseen_embedding, host_labels=host_labels)

    # ------------------------------------------------------------------ checks
    def _last_good(self) -> str:
        return (f"last good checkpoint: {self.checkpoint_path} (iteration {self._saved_iteration})"
                if self._saved_iteration is not None else "no checkpoint was written")

    def _check_and_log(self, summary: bool = False) -> None:
        """Read the pending iterations' losses back from the device (one wait for the device),
        stop at the first non-finite one, and log the records before it.

        ``summary``: also show the last record (progress bar or a console line).
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        host = torch.cat([p.values for p in pending]).cpu().tolist()
        now = time.perf_counter()
        seconds, self._block_start = (now - self._block_start) / len(pending), now
        records, offset = [], 0
        for p in pending:
            values = dict(zip(p.names, host[offset:offset + len(p.names)]))
            offset += len(p.names)
            bad = [f"{name} = {value}" for name, value in values.items() if not math.isfinite(value)]
            if bad:
                if self.log is not None:
                    self.log.write_many(records)
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {p.iteration} ({self.schedule_name}, {p.kind}): {', '.join(bad)}; "
                    f"training stopped, the weights updated from it are not saved; {self._last_good()}")
            records.append({"iteration": p.iteration, "step": p.kind, **values,
                            **{f"lr_{k}": v for k, v in p.rates.items()},
                            "seconds": seconds, "skipped_batches": p.skipped_batches})
        if self.log is not None:
            self.log.write_many(records)
        if not summary:
            return
        last = records[-1]
        shown = {k: f"{last[k]:.3g}" for k in ("loss_D", "loss_B", "loss_G", "acc_real") if k in last}
        if self._bar is not None:
            self._bar.set_postfix(shown)
        elif self.progress:
            self.say(f"[{self.schedule_name} {self.iteration}/{self.schedule.iterations}] {last['step']} "
                     + " ".join(f"{k} {v}" for k, v in shown.items()) + f" ({seconds:.2f} s/it)")

    def _check_weights(self) -> None:
        """Non-finite weights (which finite losses can still produce, e.g. through an overflowing
        gradient) are never saved either."""
        named = list(self.model.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).cpu()
        if not bool(finite.all()):
            bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
            raise NonFiniteLossError(f"non-finite weights after iteration {self.iteration} ({self.schedule_name}): "
                                     f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; not saved; "
                                     f"{self._last_good()}")

    def _close_outputs(self) -> None:
        for stream in (self.log, self.eval_log):
            if stream is not None:
                stream.close()
        self.log = self.eval_log = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def run(self) -> TrainResult:
        try:
            if self.already_finished is not None:
                scores = self.already_finished if self.ctx.is_main else None
                self.model.eval()
                return TrainResult(out_dir=self.out_dir, checkpoint=self.checkpoint_path, iteration=self.iteration,
                                   completed=True, scores=scores, model=self.model, rank=self.ctx.rank)
            return self._run()
        finally:
            self._close_outputs()
            self._settings.close()
            teardown_distributed(self.ctx)

    def _run(self) -> TrainResult:
        sched, runtime = self.schedule, self.runtime
        total = sched.iterations
        last = total if self.stop_at is None else min(total, self.stop_at)
        self._saved_iteration = self.iteration if self.checkpoint_path.is_file() and self.iteration else None
        self._bar = None
        # a bar in terminals and notebooks; elsewhere (a log file) a summary line per log_interval
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        if self.progress and self.ctx.is_main and interactive:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=self.iteration, desc=f"{self.config.name} {self.schedule_name}",
                             dynamic_ncols=True)
        self._block_start = time.perf_counter()
        try:
            while self.iteration < last:
                kind = step_kind(self.schedule_name, sched, self.iteration)
                rates = apply_learning_rates(self.optimizers, sched, self.config.optim, self.iteration)
                out = self._run_iteration(kind)
                names = sorted(out.logs)
                # averaged over processes on the device; read back at the next check
                values = all_reduce_mean(torch.stack([out.logs[n] for n in names]), self.ctx)

                self.optimizers.zero_grad()
                self.scaler.scale(out.total).backward()
                self.scaler.step(self.optimizers.discriminator)
                if out.trains_backbone and self.optimizers.backbone is not None:
                    self.scaler.step(self.optimizers.backbone)
                if out.trains_generator:
                    self.scaler.step(self.optimizers.generator)
                self.scaler.update()
                self.iteration += 1
                self._pending.append(_PendingRecord(self.iteration, kind, names, values, rates,
                                                    self.skipped_batches))
                if self._bar is not None:
                    self._bar.update(1)

                due_log = bool(runtime.log_interval) and self.iteration % runtime.log_interval == 0
                due_checkpoint = bool(runtime.checkpoint_interval) and self.iteration % runtime.checkpoint_interval == 0
                due_eval = (bool(runtime.eval_interval) and self.iteration % runtime.eval_interval == 0
                            and self.iteration < total)
                if due_log or due_checkpoint or due_eval or self.iteration == last:
                    self._check_and_log(summary=due_log)
                if due_checkpoint:
                    self.save_checkpoint()
                if due_eval:
                    self.evaluate_now(limit=runtime.eval_images)
                if due_checkpoint or due_eval:
                    self._block_start = time.perf_counter()
        finally:
            if self._bar is not None:
                self._bar.close()
        completed = self.iteration >= total
        if self._saved_iteration != self.iteration:
            self.save_checkpoint()
        scores = None
        if completed:
            scores = self.evaluate_now(limit=None)
        self.model.eval()
        return TrainResult(out_dir=self.out_dir, checkpoint=self.checkpoint_path, iteration=self.iteration,
                           completed=completed, scores=scores if self.ctx.is_main else None, model=self.model,
                           rank=self.ctx.rank)

    # ------------------------------------------------------------------ outputs
    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (rank 0; every process contributes its RNG state), after
        checking the pending losses and the weights (:class:`NonFiniteLossError`)."""
        self._check_and_log()
        self._check_weights()
        sync_buffers(self.model, self.ctx)
        rng = gather_objects(ckpt.capture_rng_state(), self.ctx)
        if self.ctx.is_main:
            epoch, batch = self.batches.position
            payload = ckpt.build_checkpoint(
                iteration=self.iteration, model_state=self.model.state_dict(), schedule=self.schedule_name,
                config=self.config_data, optimizers=self.optimizers.state_dict(),
                grad_scaler=self.scaler.state_dict(), rng=rng, epoch=epoch, batch=batch,
                skipped_batches=self.skipped_batches)
            ckpt.atomic_save(payload, self.checkpoint_path)
        barrier(self.ctx)
        self._saved_iteration = self.iteration

    def evaluate_now(self, limit: int | None) -> dict[str, Any]:
        """Scores on ``data.eval_split`` (original protocol), logged to ``eval.jsonl``, and figures."""
        from cagnet.evaluate import evaluate
        from cagnet.metrics import format_scores

        self._check_and_log()
        sync_buffers(self.model, self.ctx)
        scores = evaluate(self.model, self.eval_set, self.info, "original", test_size=self.config.data.test_size,
                          limit=limit, batch_size=self.config.data.test_batch_size, device=self.ctx.device,
                          amp=self.amp)
        self._set_train_mode()
        if self.ctx.is_main:
            record = {"iteration": self.iteration, "split": self.eval_split,
                      **{k: v for k, v in scores.items() if k != "class_names"}}
            self.eval_log.write(record)
            self.say(f"[{self.schedule_name} {self.iteration}/{self.schedule.iterations}] {self.eval_split} "
                     f"({scores['num_images']} images): {format_scores(scores)}")
            self.write_figures()
        return scores

    def write_figures(self) -> None:
        """``loss_curves.png``, ``eval_curves.png`` and ``predictions.png`` (rank 0)."""
        write_run_figures(self.out_dir, self.model, self.eval_set, self.info, self.config.data.normalization,
                          self.ctx.device, self.amp, self.runtime.sample_images)
        self._set_train_mode()


def train(config: TrainConfig, schedule: str = "step1", out_dir: str | Path | None = None, *,
          init_model: str | Path | None = None, resume: bool = False, stop_at: int | None = None,
          progress: bool | None = None, verbose: bool = True, force: bool = False,
          allow_unfinished_start: bool = False) -> TrainResult:
    """Train one schedule of ``config`` (see the module docstring).

    Args:
        config: a loaded :class:`~cagnet.config.TrainConfig` (:func:`cagnet.config.load_train_config`).
        schedule: ``step1``, ``mixed``, ``st`` or ``st_mixed``.
        out_dir: run folder (default ``runs/<config name>/<schedule>``).
        init_model: initial weights: an original-layout checkpoint, DeepLabV2 init weights, a
            project checkpoint, ``torchvision:resnet101`` or a torchvision ResNet state dict file
            (:func:`cagnet.models.load_checkpoint`; overrides the schedule's ``init_model`` /
            ``init_from``). Weights trained on another input normalisation than
            ``data.normalization`` are refused (:func:`cagnet.models.check_input_normalization`).
        resume: continue from ``<out_dir>/checkpoint.pt`` (a finished run: nothing to do, its
            final scores are returned).
        stop_at: stop after this iteration (positive; with a checkpoint), to resume later.
        force: replace a run that ``out_dir`` holds (refused otherwise,
            :class:`~cagnet.errors.RunFolderError`).
        allow_unfinished_start: start from an ``init_from`` run that stopped before its last
            iteration (refused otherwise).
        progress: progress bar (default ``runtime.progress``).
        verbose: notes and evaluation summaries on stderr (rank 0).
    """
    return Trainer(config, schedule, out_dir, init_model=init_model, resume=resume, stop_at=stop_at,
                   progress=progress, verbose=verbose, force=force,
                   allow_unfinished_start=allow_unfinished_start).run()


__all__ = ["MAX_CONSECUTIVE_SKIPS", "NonFiniteLossError", "TrainResult", "Trainer", "step_kind", "train"]
