"""The training loop on ``accelerate``: one code path for CPU, one GPU and N GPUs (DDP or FSDP2) via
``accelerate launch``.

Accumulation, the NaN guard and checkpointing are explicit here rather than delegated to ``accelerator.accumulate``
and ``save_state``: a skipped non-finite step must drop the whole accumulation group on every rank, and checkpoints
must be safetensors + JSON (``save_state`` pickles the optimizer and RNG states).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from ..backbones.qwen import QwenVL
from ..backbones.sam3 import Sam3Backbone
from ..errors import CheckpointError, InputError, RunStopped
from ..pipeline import DetecturePipeline
from ..utils import atomic
from ..utils.json_files import read_json_object
from . import checkpoint as ckpt
from . import sharding
from .batching import make_batch
from .config import GROUPS, Config
from .evaluate import live_evaluate, teacher_forced_scores
from .factory import TRACKER_RUN, TrainingParts, build_parts
from .model import Batch
from .monitor import EVAL_CSV, STEPS_CSV, Monitor, clear_logs, plot_curves, truncate_after
from .schedule import LRSchedule

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_CONFIG = "config.json"  # the run's whole configuration, rewritten when it starts or resumes
RUN_CONTRACT = "contract.json"  # the inference contract the run trains under (checked on --resume)
FINAL = "final"
LOSS_TERMS = ("total", "mask_ce", "mask_dice", "lm")
STEP_FIELDS = ["step", "epoch", "stage", *LOSS_TERMS, "grad_norm", *(f"lr_{g}" for g in GROUPS), "skipped",
               "samples_per_s", "val_seg_emission", "val_miou_tf"]
EVAL_FIELDS = ["step", "epoch", "n", "failures", "seg_emission", "k_accuracy", "miou", "panoptic_iou", "ari"]
# Settings a checkpoint fixes, which --resume may not change: the LR schedule and AdamW's hyper-parameters are
# restored from it (a new value would be ignored while config.json and later checkpoints recorded it), its data
# position counts micro-batches of this size in this seed's sample order, and its weights are a LoRA of this rank,
# scale (alpha / r) and set of layers on these backbones, quantized as they were (another backbone of the same widths
# would load them silently, and the head records the quantization it was fitted to). What the loop reads from the config at each step (epochs, cadences, clip_norm, loss weights, LoRA
# dropout, ...) may change; a new peak and warm-up are a restart's (--resume-lr-scale, --resume-warmup-epochs). The
# data itself (and data.max_regions, which only chooses which samples are kept) is compared through the dataset's
# digest (DataPosition).
FIXED_ON_RESUME = ("optim.lr", "optim.min_lr", "optim.warmup_epochs", "optim.stage1_epochs", "optim.stage1_scales",
                   "optim.stage2_scales", "optim.weight_decay", "optim.betas", "optim.batch_size", "optim.grad_accum",
                   "train.seed", "lora.r", "lora.alpha", "lora.target_modules", "model.qwen", "model.sam3",
                   "model.tiny", "model.quantization")


class NonFiniteLossError(RunStopped):
    """Too many optimizer steps in a row had a NaN/inf loss or gradient: the run stops unfinished, its checkpoints
    kept, and resumes with a lower peak or from an earlier checkpoint (the message says how)."""


@dataclass
class ResumeOptions:
    resume: bool = False
    lr_scale: float | None = None  # micro-warm-up restart: peak lr × this
    warmup_epochs: float | None = None


@dataclass(frozen=True)
class DataPosition:
    """What a checkpoint's data position (``epoch``, ``batch_in_epoch``) is counted in: the kept samples of the
    training data (their count and :meth:`~detecture.training.dataset.ScanReport.digest`), shuffled by the seed and
    split between ``world_size`` processes."""

    samples: int
    digest: str
    world_size: int

    def changes_from(self, state: ckpt.TrainerState) -> list[str]:
        """What differs from the checkpoint's ``state``; its data is not compared when it records none (a checkpoint
        written before the digest was)."""
        changed = []
        if state.dataset_digest and state.dataset_digest != self.digest:
            changed.append(f"the training data ({state.dataset_samples} -> {self.samples} kept samples, "
                           f"records {state.dataset_digest[:12]} -> {self.digest[:12]})")
        if state.world_size != self.world_size:
            changed.append(f"the process count ({state.world_size} -> {self.world_size})")
        return changed


def check_resume(out: Path, options: ResumeOptions, cfg: Config | None = None,
                 data: DataPosition | None = None) -> Path | None:
    """The checkpoint to resume from (``None`` for a fresh run); refuses a restart's warm-up without its restart, to
    overwrite an existing run without ``--resume``, a ``--resume`` with nothing to resume, one that changes a
    setting the checkpoint fixes (:data:`FIXED_ON_RESUME`, compared with ``cfg``) or has fewer epochs than it has
    trained, and one on other data or another process count (``data``, known once the dataset is scanned). Cheap:
    ``detecture train`` calls it before loading models, and the trainer again with ``data``."""
    if options.warmup_epochs is not None and options.lr_scale is None:
        raise InputError("--resume-warmup-epochs only applies together with --resume-lr-scale (the warm-up of its "
                         "restart)")
    checkpoints = Path(out) / CHECKPOINTS
    latest = ckpt.latest_checkpoint(checkpoints)
    if not options.resume:
        if latest is not None:
            raise CheckpointError(f"{out}: already holds a training run ({latest.name}); "
                                  "pass --resume to continue it or choose another --out")
        if options.lr_scale is not None:
            raise CheckpointError("--resume-lr-scale only applies together with --resume")
        return None
    if latest is None:
        raise CheckpointError(f"{checkpoints}: no checkpoint to resume from")
    state = ckpt.read_state(latest)
    if cfg is not None:
        changed = changed_on_resume(state.config, cfg, options)
        if changed:
            raise InputError(
                f"{latest}: --resume cannot change {', '.join(changed)}: the checkpoint's schedule, AdamW settings, "
                "data position, LoRA and backbones stay in force; resume with the run's values (its config.json), "
                "or restart with a new peak and warm-up through --resume-lr-scale / --resume-warmup-epochs")
        begun = state.epoch + (state.batch_in_epoch > 0)
        if cfg.optim.epochs < begun:
            # nothing could be trained, and the export would record fewer epochs than its weights have seen
            raise InputError(f"{latest}: optim.epochs {cfg.optim.epochs} is fewer than the {begun} epoch(s) the "
                             f"checkpoint has trained (in part); resume with --epochs {begun} or more")
    if data is not None:
        moved = data.changes_from(state)
        if moved:
            raise InputError(
                f"{latest}: --resume cannot change {', '.join(moved)}: the checkpoint's data position counts the "
                "run's kept samples in its seeded order, split between its processes; resume with the same --data "
                "(and data.max_regions) on as many processes")
    return latest


def changed_on_resume(saved: dict, cfg: Config, options: ResumeOptions) -> list[str]:
    """``"key (old -> new)"`` for each :data:`FIXED_ON_RESUME` key whose value in ``cfg`` differs from the checkpoint's
    config ``saved`` (a key that config lacks is not compared). A restart without ``--resume-warmup-epochs`` takes its
    warm-up from ``optim.warmup_epochs``, so that key may change then."""
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as the checkpoint's JSON holds them
    exempt = {"optim.warmup_epochs"} if options.lr_scale is not None and options.warmup_epochs is None else set()
    changed = []
    for key in FIXED_ON_RESUME:
        section, name = key.split(".")
        values = saved.get(section)
        if not isinstance(values, dict) or name not in values or key in exempt:
            continue
        old, new = values[name], now[section][name]
        if old != new:
            changed.append(f"{key} ({json.dumps(old)} -> {json.dumps(new)})")
    return changed


@dataclass
class TrainResult:
    """What a run did: ``steps`` optimizer steps in all (earlier attempts included), ``steps_run`` of them by this
    one, so a resumed run does not report its predecessors' work as its own."""

    steps: int
    steps_run: int
    epochs_done: int
    skipped_steps: int
    skipped_samples: int
    final_dir: Path | None


@dataclass
class Accumulation:
    """One accumulation group's running loss terms (each micro-batch's weighted by its share of the group's
    samples), loss sum and sample count."""

    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(len(LOSS_TERMS)))
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)


def accumulation_samples(n_samples: int, batch_size: int, accum: int) -> list[int]:
    """The number of samples in the accumulation group of every micro-batch of an epoch of ``n_samples`` (the last
    micro-batch and the last group may be short), cut as the DataLoader and the feature cache cut the epoch."""
    n_batches = -(-n_samples // batch_size)
    group = accum * batch_size
    return [min(group, n_samples - (b // accum) * group) for b in range(n_batches)]


class Trainer:
    """Builds everything from a :class:`Config` and runs (or resumes) training into ``out``."""

    def __init__(self, cfg: Config, parts: TrainingParts, out: Path, max_steps: int | None = None) -> None:
        """Train the built ``parts`` under ``cfg`` into ``out``; :meth:`from_config` builds them."""
        self.cfg, self.out, self.max_steps = cfg, Path(out), max_steps
        self.acc, self.init, self.contract = parts.accelerator, parts.init, parts.contract
        self.dataset, self.val, self.sampler, self.loader = parts.dataset, parts.val, parts.sampler, parts.loader
        self.qwen, self.sam, self.head, self.module = parts.qwen, parts.sam, parts.head, parts.module
        self.model, self.optimizer, self.schedule = parts.model, parts.optimizer, parts.schedule
        self.batches_per_epoch, self.steps_per_epoch = parts.batches_per_epoch, parts.steps_per_epoch
        self.cache = parts.cache
        self.main = self.acc.is_main_process
        self.data = DataPosition(len(self.dataset), self.dataset.report.digest, self.acc.num_processes)
        self.state = self.fresh_state()
        self.stage = 0

    @classmethod
    def from_config(cls, cfg: Config, data: Path, out: Path, val_data: Path | None = None,
                    max_steps: int | None = None, backbones: tuple[QwenVL, Sam3Backbone] | None = None,
                    init: Path | None = None) -> "Trainer":
        """Build every part from ``cfg`` (see :func:`~detecture.training.factory.build_parts`) and a trainer on it."""
        return cls(cfg, build_parts(cfg, data, out, val_data, backbones, init), out, max_steps)

    def fresh_state(self) -> ckpt.TrainerState:
        """The state of step 0, recording what the data position will be counted in."""
        return ckpt.TrainerState(config=self.cfg.to_dict(), world_size=self.data.world_size,
                                 dataset_samples=self.data.samples, dataset_digest=self.data.digest)

    # -- checkpoints ----------------------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Path:
        return self.out / CHECKPOINTS

    def save(self) -> None:
        """Every rank takes part (gathering sharded state and RNG states); the main process writes."""
        from accelerate.utils import gather_object

        self.state.schedule = self.schedule.state_dict()
        rng = [ckpt.capture_rng()]
        if self.acc.num_processes > 1:
            rng = gather_object(rng)
        trainable = sharding.trainable_state(self.model)
        optimizer = sharding.optimizer_state(self.model, self.optimizer)
        if self.main:
            keep = self.cfg.train.keep_checkpoints
            target = self.checkpoints / f"step-{self.state.optimizer_step:08d}"
            if not target.exists():
                # Room first, so a kill mid-save never leaves more than keep_checkpoints (2 or more) on disk. The prune
                # after the write only acts when keep_checkpoints is 1: the latest cannot go before its successor.
                ckpt.prune_checkpoints(self.checkpoints, keep - 1)
            ckpt.save_checkpoint(target, trainable, optimizer, self.state, rng)
            ckpt.prune_checkpoints(self.checkpoints, keep)
        self.acc.wait_for_everyone()

    def restore(self, options: ResumeOptions) -> None:
        """Load the latest checkpoint (``--resume``), or refuse to overwrite an existing run without it. A fresh
        start also starts the logs afresh (those of an attempt killed before its first checkpoint)."""
        latest = check_resume(self.out, options, self.cfg, self.data)
        if latest is None:
            if self.main:
                self.out.mkdir(parents=True, exist_ok=True)
                clear_logs(self.out)
                atomic.write_json(self.out / RUN_CONTRACT, self.contract)
            return
        recorded = self.out / RUN_CONTRACT
        contract = read_json_object(recorded, "run contract") if recorded.is_file() else {}
        if contract and contract.get("contract") != self.contract["contract"]:
            started = contract.get("init")
            raise CheckpointError(f"{self.out}: this run trains under another inference contract (started "
                                  f"{'with --init ' + started if started else 'without --init'}); resume it with "
                                  "the same --init")
        self.state = ckpt.load_checkpoint(latest, self.model, self.optimizer, self.acc.process_index)
        saved = LRSchedule.from_state_dict(self.state.schedule)
        if saved.steps_per_epoch != self.steps_per_epoch:
            raise CheckpointError(
                f"{latest}: trained with {saved.steps_per_epoch} optimizer steps per epoch, this run has "
                f"{self.steps_per_epoch}; dataset, batch size, grad_accum and process count must stay the same")
        self.state.config = self.cfg.to_dict()  # e.g. --epochs extended: later checkpoints record the new run
        self.state.dataset_samples, self.state.dataset_digest = self.data.samples, self.data.digest
        self.schedule = saved.with_epochs(self.cfg.optim.epochs)
        if options.lr_scale is not None:
            warmup = options.warmup_epochs if options.warmup_epochs is not None else self.cfg.optim.warmup_epochs
            if saved.holds_restart(options.lr_scale, warmup, self.cfg.optim.epochs):
                log.info("the checkpoint already holds this restart (from step %d): continuing it",
                         saved.restart.step)
            else:
                self.schedule = saved.with_restart(self.state.optimizer_step, options.lr_scale, warmup,
                                                   self.cfg.optim.epochs)
        if self.main:
            # An epoch's evaluation row precedes its checkpoint: a kill between them leaves a row of the step resumed
            # from whose evaluation runs again, so evaluation rows are kept by the epochs the checkpoint has done.
            truncate_after(self.out / STEPS_CSV, self.state.optimizer_step)
            truncate_after(self.out / EVAL_CSV, self.state.epoch, key="epoch")
        log.info("resumed from %s: epoch %d, batch %d, step %d", latest.name, self.state.epoch,
                 self.state.batch_in_epoch, self.state.optimizer_step)

    # -- stages and data ------------------------------------------------------------------------------------------

    def set_stage(self, stage: int) -> None:
        """Stage 2 puts Qwen in train mode, so gradient checkpointing is active (its dropouts are 0)."""
        if stage == self.stage:
            return
        self.stage = stage
        base = self.qwen.model.get_base_model()
        if stage == 2 and self.cfg.model.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.qwen.model.train(stage == 2)
        self.sam.model.eval()
        self.head.train()
        log.info("stage %d from optimizer step %d", stage, self.state.optimizer_step)

    def epoch_batches(self, epoch: int, start: int):
        """This rank's micro-batches of ``epoch`` from batch ``start`` on: from the feature cache in stage 1 when
        enabled (built on first use), else live (decoded and augmented by the DataLoader)."""
        if self.stage == 1 and self.cache is not None:
            if not self.cache.is_complete():
                with sharding.gathered_weights(self.model):
                    self.cache.build(self.module, self.acc)
            yield from self.cache.epoch_batches(self.sampler, epoch, start, self.sam.dtype)
            return
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start * self.cfg.optim.batch_size)
        for items in self.loader:
            yield make_batch(items, self.module)

    # -- monitoring -------------------------------------------------------------------------------------------------

    def validation_batch(self) -> Batch | None:
        if self.val is None:
            return None
        n = min(len(self.val), self.cfg.train.emission_check_samples)
        items = [self.val.item(i, epoch=0) for i in range(n)]
        return make_batch(items, self.module).to(self.acc.device)

    def pipeline(self) -> DetecturePipeline:
        return DetecturePipeline(self.qwen, self.sam, self.head, max_new_tokens=self.cfg.train.max_new_tokens)

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode for head and Qwen (no Bridge dropout, no checkpointing during generation), restored after; all
        ranks enter (gathering FSDP shards), and the body runs on the main process only."""
        qwen_training = self.qwen.model.training
        self.head.eval()
        self.qwen.model.eval()
        try:
            with sharding.gathered_weights(self.model):
                yield
        finally:
            self.head.train()
            self.qwen.model.train(qwen_training)

    def quick_validation(self) -> dict[str, float]:
        """SEG emission rate (live generation) and teacher-forced mIoU on a small validation batch (main only)."""
        if self.val is None:
            return {}
        with self.evaluating():
            if not self.main:
                return {}
            batch = self.validation_batch()
            tf = teacher_forced_scores(self.module, batch)
            indices = list(range(len(batch.ids)))
            live = live_evaluate(self.pipeline(), self.val, indices, self.cfg.train.eval_regime)
        return {"val_seg_emission": live.seg_emission, "val_miou_tf": sum(tf) / len(tf)}

    def full_evaluation(self, monitor: Monitor, epoch: int) -> None:
        if self.val is None:
            return
        n = min(len(self.val), self.cfg.train.eval_max_samples)
        with self.evaluating():
            if not self.main:
                return
            scores = live_evaluate(self.pipeline(), self.val, list(range(n)), self.cfg.train.eval_regime)
        row = {"step": self.state.optimizer_step, "epoch": epoch + 1, **scores.as_dict()}
        monitor.log_eval(row)
        log.info("live validation after epoch %d: %s", epoch + 1,
                 ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

    # -- the loop -------------------------------------------------------------------------------------------------

    def optimizer_step(self, loss_sum: torch.Tensor) -> tuple[bool, float]:
        """Clip and step unless the loss or the gradient is non-finite on any rank; returns (stepped, grad norm).

        The flag is reduced on the accelerator's device: an NCCL group (DDP on GPUs) only takes CUDA tensors, and
        the loss sum is kept on the CPU."""
        flag = torch.isfinite(loss_sum).float().reshape(1).to(self.acc.device)
        finite = self.acc.reduce(flag, reduction="sum").cpu()
        # All parameters, as FSDP clipping requires (frozen ones have no gradient); a sharded norm is a DTensor.
        norm = self.acc.clip_grad_norm_(list(self.model.parameters()), self.cfg.optim.clip_norm)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        ok = bool(finite.item() == self.acc.num_processes) and bool(torch.isfinite(norm))
        if ok:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return ok, float(norm)

    def check_nonfinite(self, ok: bool) -> None:
        if ok:
            self.state.nonfinite_streak = 0
            return
        self.state.nonfinite_streak += 1
        self.state.nonfinite_total += 1
        log.warning("non-finite loss or gradient at step %d: step skipped (%d in a row)",
                    self.state.optimizer_step, self.state.nonfinite_streak)
        if self.state.nonfinite_streak >= self.cfg.train.max_nonfinite_steps:
            # optim.lr is fixed on resume (FIXED_ON_RESUME): a lower peak is a restart's, and the checkpoint resumed
            # from is the one latest.json names, which may be pointed at an older one kept beside it
            raise NonFiniteLossError(
                f"{self.state.nonfinite_streak} optimizer steps in a row had a NaN/inf loss or gradient (limit "
                f"train.max_nonfinite_steps = {self.cfg.train.max_nonfinite_steps}); stopping. Check the data, "
                "resume with a lower peak (--resume --resume-lr-scale S, S < 1), or resume from an earlier "
                f"checkpoint: name one of the step-* folders in {self.checkpoints} as \"checkpoint\" in its "
                f"{ckpt.LATEST}, then --resume")

    def run(self, options: ResumeOptions | None = None) -> TrainResult:
        options = options or ResumeOptions()
        self.restore(options)
        start_step = self.state.optimizer_step
        finished = self.state.epoch >= self.cfg.optim.epochs and (self.out / FINAL).is_dir()
        monitor = Monitor(self.out, STEP_FIELDS, EVAL_FIELDS, self.acc, TRACKER_RUN)
        if self.main:
            atomic.write_json(self.out / RUN_CONFIG, self.cfg.to_dict())
        try:
            stopped = self._loop(monitor)
        finally:
            monitor.close()
        final = None
        if finished:
            log.info("the run had already trained its %d epochs: nothing to train, %s left as it was",
                     self.cfg.optim.epochs, self.out / FINAL)
            final = self.out / FINAL
        elif not stopped:
            final = self.export()
        if self.main:
            plot_curves(self.out)
            log.info("data: %s", self.dataset.report.summary())
            log.info("non-finite steps skipped: %d", self.state.nonfinite_total)
        return TrainResult(steps=self.state.optimizer_step, steps_run=self.state.optimizer_step - start_step,
                           epochs_done=self.state.epoch,
                           skipped_steps=self.state.nonfinite_total,
                           skipped_samples=sum(self.dataset.report.skipped.values()), final_dir=final)

    def reached_max_steps(self) -> bool:
        """``--max-steps`` bounds the run's total optimizer steps, those of earlier attempts included."""
        return self.max_steps is not None and self.state.optimizer_step >= self.max_steps

    def _loop(self, monitor: Monitor) -> bool:
        """Train to the configured epoch count; returns True if stopped early by ``max_steps``. A run resumed at or
        past ``max_steps`` (the same command run again) trains no step and stops there as it did."""
        cfg, state = self.cfg, self.state
        if state.epoch < cfg.optim.epochs and self.reached_max_steps():
            log.info("already at optimizer step %d of --max-steps %d: nothing to train, the run stays stopped there",
                     state.optimizer_step, self.max_steps)
            return True
        # This rank's share: DDP averages the ranks' gradients, and every rank's share is cut into groups of the same
        # sample counts (EpochSampler pads the ranks to one length), so a step is the mean over all its samples.
        sizes = accumulation_samples(len(self.sampler.indices()), cfg.optim.batch_size, cfg.optim.grad_accum)
        with tqdm(total=cfg.optim.epochs * self.steps_per_epoch, initial=state.optimizer_step, desc="train",
                  unit="step", disable=not self.main, dynamic_ncols=True) as progress:
            return self._epochs(monitor, sizes, progress)

    def _epochs(self, monitor: Monitor, sizes: list[int], progress: tqdm) -> bool:
        """Epoch after epoch: set the stage, train the epoch, then evaluate and checkpoint at its end."""
        for epoch in range(self.state.epoch, self.cfg.optim.epochs):
            self.set_stage(self.schedule.stage(epoch * self.steps_per_epoch))
            if self.train_epoch(epoch, monitor, sizes, progress):
                return True
            self.end_epoch(epoch, monitor)
        return False

    def train_epoch(self, epoch: int, monitor: Monitor, sizes: list[int], progress: tqdm) -> bool:
        """Accumulate micro-batches and take one optimizer step per group; True when ``max_steps`` stopped the run."""
        cfg, state = self.cfg, self.state
        start = state.batch_in_epoch if epoch == state.epoch else 0
        group = Accumulation()
        for b, batch in enumerate(self.epoch_batches(epoch, start), start=start):
            last = (b + 1) % cfg.optim.grad_accum == 0 or b + 1 == self.batches_per_epoch
            self.accumulate(batch, sizes[b], last, group)
            if not last:
                continue
            row = self.step(epoch, b, group)
            self.log_step(row, monitor, progress)
            group = Accumulation()
            if self.reached_max_steps():
                self.save()
                log.info("stopped after --max-steps %d", self.max_steps)
                return True
            if cfg.train.save_every_steps and state.optimizer_step % cfg.train.save_every_steps == 0:
                self.save()
        return False

    def accumulate(self, batch: Batch, group_samples: int, last: bool, group: "Accumulation") -> None:
        """Forward and backward one micro-batch; DDP syncs gradients only on the group's last micro-batch.

        The micro-batch's loss is a mean over its samples of each one's own loss (``training/losses.py``), so it is
        weighted by its share of the group's ``group_samples``: the step's gradient is then the mean over the group's
        samples, also when an epoch's last micro-batch is short (a 1-sample micro-batch beside 2-sample ones would
        otherwise count twice), and whatever the batch size and accumulation that group them."""
        weight = len(batch.ids) / group_samples
        with contextlib.nullcontext() if last else self.acc.no_sync(self.model):
            with self.acc.autocast():
                terms = self.model(batch.to(self.acc.device), self.stage)
            self.acc.backward(terms.total * weight)
        values = terms.as_floats()
        group.sums += torch.tensor([values[k] for k in LOSS_TERMS]) * weight
        group.loss_sum = group.loss_sum + terms.total.detach().float().cpu()
        group.samples += len(batch.ids)

    def step(self, epoch: int, batch_index: int, group: "Accumulation") -> dict:
        """Set the learning rates, step (or skip a non-finite group), and return the step's log row."""
        state = self.state
        lrs = self.schedule.apply(self.optimizer, state.optimizer_step)
        ok, norm = self.optimizer_step(group.loss_sum)
        self.check_nonfinite(ok)
        state.optimizer_step += 1
        state.batch_in_epoch = batch_index + 1
        means = self.acc.reduce(group.sums.to(self.acc.device), reduction="mean").cpu().tolist()
        row = {"step": state.optimizer_step, "epoch": epoch + 1, "stage": self.stage,
               **dict(zip(LOSS_TERMS, means)), "grad_norm": norm, "skipped": int(not ok),
               **{f"lr_{g}": v for g, v in lrs.items()},
               "samples_per_s": group.samples * self.acc.num_processes / (time.perf_counter() - group.started)}
        if self.stage == 1:
            row["lm"] = ""  # not computed: nothing the LM loss could train is active in stage 1
        return row

    def log_step(self, row: dict, monitor: Monitor, progress: tqdm) -> None:
        """Add the periodic SEG-emission check to the row, log it, and advance the progress bar. A row is logged every
        ``log_every`` steps, and also on any step whose row carries a check's values: the check costs a generation,
        and its result must not be dropped because the two cadences do not line up."""
        every = self.cfg.train.emission_every_steps
        checked: dict[str, float] = {}
        if every and self.state.optimizer_step % every == 0:
            checked = self.quick_validation()
            row.update(checked)
            self.acc.wait_for_everyone()
        if checked or self.state.optimizer_step % self.cfg.train.log_every == 0:
            monitor.log_step(row)
        progress.update(1)
        progress.set_postfix(loss=f"{row['total']:.4f}", stage=self.stage, epoch=row["epoch"])

    def end_epoch(self, epoch: int, monitor: Monitor) -> None:
        """Mark the epoch done, run live evaluation when due, and checkpoint."""
        self.state.epoch, self.state.batch_in_epoch = epoch + 1, 0
        if self.cfg.train.eval_every_epochs and (epoch + 1) % self.cfg.train.eval_every_epochs == 0:
            self.full_evaluation(monitor, epoch)
            self.acc.wait_for_everyone()
        self.save()

    def export(self) -> Path | None:
        """Write ``<out>/final`` (see :func:`checkpoint.export_trained`); every rank takes part in the gathering."""
        final = self.out / FINAL
        trainable = sharding.trainable_state(self.model)
        if self.main:
            ckpt.export_trained(final, self.module, trainable)
        self.acc.wait_for_everyone()
        if not self.main:
            return None
        log.info("trained head + adapter written to %s", final)
        return final
