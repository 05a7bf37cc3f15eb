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
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..utils import atomic
from ..backbones.loading import default_attn_implementation, default_dtype
from ..backbones.qwen import QwenVL
from ..backbones.sam3 import Sam3Backbone
from ..bridge.head import DetectureHead, HeadConfig
from ..errors import CheckpointError, DetectureError
from ..pipeline import DetecturePipeline
from . import checkpoint as ckpt
from . import sharding
from .batching import make_batch
from .config import GROUPS, Config
from .dataset import EpochSampler, TextureDataset, collate_items
from .evaluate import live_evaluate, teacher_forced_scores
from .feature_cache import FeatureCache
from .model import Batch, TrainModule
from .monitor import EVAL_CSV, STEPS_CSV, Monitor, plot_curves, truncate_after
from .schedule import LRSchedule
from .trainable import apply_lora, build_optimizer, load_adapter_weights, param_groups, parameter_table

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_CONTRACT = "contract.json"  # the inference contract the run trains under (checked on --resume)
FINAL = "final"
LOSS_TERMS = ("total", "mask_ce", "mask_dice", "lm")
STEP_FIELDS = ["step", "epoch", "stage", *LOSS_TERMS, "grad_norm", *(f"lr_{g}" for g in GROUPS), "skipped",
               "samples_per_s", "val_seg_emission", "val_miou_tf"]
EVAL_FIELDS = ["step", "epoch", "n", "failures", "seg_emission", "k_accuracy", "miou", "panoptic_iou", "ari"]


class NonFiniteLossError(DetectureError):
    """Too many optimizer steps in a row had a NaN/inf loss or gradient."""


@dataclass
class ResumeOptions:
    resume: bool = False
    lr_scale: float | None = None  # micro-warm-up restart: peak lr × this
    warmup_epochs: float | None = None


def check_resume(out: Path, options: ResumeOptions) -> Path | None:
    """The checkpoint to resume from (``None`` for a fresh run); refuses to overwrite an existing run without
    ``--resume`` and a ``--resume`` with nothing to resume. Cheap: ``detecture train`` calls it before loading models."""
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
    return latest


@dataclass
class TrainResult:
    steps: int
    epochs_done: int
    skipped_steps: int
    skipped_samples: int
    final_dir: Path | None


def load_backbones(cfg: Config, device: torch.device, sharded: bool = False) -> tuple[QwenVL, Sam3Backbone]:
    """Tiny random backbones (offline) or the configured hub ids / local folders; both frozen.

    ``sharded`` (FSDP) loads to CPU RAM in ``device``'s dtype and attention backend: sharding then moves each rank's
    part to its GPU, so no GPU ever holds a whole backbone.
    """
    m = cfg.model
    if m.tiny:
        qwen, sam = QwenVL.tiny(cfg.train.seed), Sam3Backbone.tiny(cfg.train.seed)
        qwen.model.to(device)
        sam.model.to(device)
        return qwen, sam
    place, dtype = (torch.device("cpu") if sharded else device), default_dtype(device)
    qwen = QwenVL.from_pretrained(m.qwen, device=place, dtype=dtype, quantization=m.quantization,
                                  attn_implementation=default_attn_implementation(device, m.attn_implementation))
    return qwen, Sam3Backbone.from_pretrained(m.sam3, device=place, dtype=dtype)


def check_launch(state, quantization: str | None) -> None:
    """Refuse the launches this loop cannot run correctly, before any backbone is loaded.

    DeepSpeed's engine takes over accumulation, clipping and the optimizer step, which the NaN guard and the per-step
    schedule here need to own; its ZeRO-2 would only partition the AdamW state of ~8M trainable parameters, and
    ZeRO-3 does what FSDP2 does. FSDP1 flattens parameters, so the per-unit unshard that rank-local evaluation needs
    is FSDP2's. A 4-bit Qwen has integer weights that FSDP cannot shard.
    """
    from accelerate.utils import DistributedType

    if state.distributed_type == DistributedType.DEEPSPEED:
        raise DetectureError(
            "DeepSpeed launches are not supported: launch with configs/accelerate/ddp.yaml (optionally with "
            "model.quantization: 4bit for 24 GB GPUs) or configs/accelerate/fsdp.yaml to shard the frozen backbones")
    if state.distributed_type != DistributedType.FSDP:
        return
    if state.fsdp_plugin.fsdp_version != 2:
        raise DetectureError("FSDP training needs fsdp_version: 2 in the accelerate config (see "
                             "configs/accelerate/fsdp.yaml)")
    if quantization is not None:
        raise DetectureError(f"model.quantization: {quantization} cannot be combined with FSDP (4/8-bit weights "
                             "cannot be sharded); use DDP with the quantized Qwen, or FSDP with a bf16 one")


def accumulation_sizes(n_batches: int, accum: int) -> list[int]:
    """Size of the accumulation group of every micro-batch (the last group of an epoch may be short)."""
    return [min(accum, n_batches - (b // accum) * accum) for b in range(n_batches)]


class Trainer:
    """Builds everything from a :class:`Config` and runs (or resumes) training into ``out``."""

    def __init__(self, cfg: Config, data: Path, out: Path, val_data: Path | None = None,
                 max_steps: int | None = None, backbones: tuple[QwenVL, Sam3Backbone] | None = None,
                 init: Path | None = None) -> None:
        """``backbones`` replaces loading from ``cfg.model`` (e.g. random full-size architectures in benchmarks).
        ``init`` is a head folder (``detecture train`` output or ``detecture convert``): training starts from its
        head and adapter and runs under its inference contract (prompts, positions, Qwen image, logit scale)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed

        self.cfg, self.out, self.max_steps = cfg, Path(out), max_steps
        mixed = cfg.train.mixed_precision if torch.cuda.is_available() else "no"
        if mixed != cfg.train.mixed_precision:
            log.info("no CUDA device: training in fp32 (bf16 autocast on CPU is slower, not faster)")
        # LoRA / SEG rows take no part in stage-1 forwards, so DDP must tolerate unused parameters.
        # cpu=True on CPU-only machines: several launched processes then form a gloo (MULTI_CPU) group.
        self.acc = Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(),
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        check_launch(self.acc.state, cfg.model.quantization)
        sharded = self.acc.distributed_type == DistributedType.FSDP
        set_seed(cfg.train.seed)
        self.main = self.acc.is_main_process
        # Data first: a bad dataset should fail before minutes of backbone loading.
        self.dataset = TextureDataset(data, cfg.data, cfg.train.seed, train=True)
        self.val = TextureDataset(val_data, cfg.data, cfg.train.seed, train=False) if val_data else None
        if self.val is None and (cfg.train.eval_every_epochs or cfg.train.emission_every_steps):
            log.info("no --val-data: live evaluation and SEG-emission checks are off")
        self.init = init
        init_head = DetectureHead.from_pretrained(init) if init is not None else None  # fail before backbones load
        self.qwen, self.sam = backbones or load_backbones(cfg, self.acc.device, sharded)
        if init_head is not None:
            init_head.check_qwen_width(self.qwen.hidden_size, init)
            init_head.config.contract = init_head.config.effective_contract  # the run writes what it trained under
        self.head = init_head or DetectureHead(HeadConfig.for_backbones(self.qwen, self.sam, **cfg.model.head))
        self.qwen.apply_contract(self.head.config.effective_contract)
        apply_lora(self.qwen, cfg.lora, quantized=cfg.model.quantization is not None,
                   gradient_checkpointing=cfg.model.gradient_checkpointing)
        adapter = DetectureHead.adapter_path(init) if init is not None else None
        if adapter is not None:
            load_adapter_weights(self.qwen, adapter, cfg.lora)
        self.head.to(self.acc.device)  # backbones are placed by their loaders (a 4-bit Qwen must not be moved)
        self.module = TrainModule(self.qwen, self.sam, self.head, cfg.loss)
        self.groups = param_groups(self.module, cfg.optim.weight_decay)
        self.optimizer = build_optimizer(self.groups, cfg.optim)
        frozen = sum(p.numel() for p in self.module.parameters() if not p.requires_grad)
        if self.main:
            print(parameter_table(self.groups, cfg.optim, frozen))
        self.sampler = EpochSampler(len(self.dataset), cfg.train.seed, self.acc.process_index, self.acc.num_processes)
        # Own generator: creating a DataLoader iterator must not draw from the global RNG (exact resume).
        self.loader = DataLoader(self.dataset, batch_size=cfg.optim.batch_size, sampler=self.sampler,
                                 collate_fn=collate_items, num_workers=cfg.data.num_workers,
                                 generator=torch.Generator().manual_seed(cfg.train.seed))
        self.batches_per_epoch = math.ceil(len(self.sampler.indices()) / cfg.optim.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.optim.grad_accum)
        self.schedule = LRSchedule.from_config(cfg.optim, self.steps_per_epoch)
        # The optimizer goes through prepare() too: FSDP re-maps parameters to their shards at wrap time.
        self.model, self.optimizer = self.acc.prepare(self.module, self.optimizer, device_placement=[False, False])
        self.cache = None
        if cfg.cache.enabled:
            self.cache = FeatureCache(Path(cfg.cache.dir or self.out / "feature_cache"), cfg, self.dataset,
                                      self._run_contract())
        self.state = ckpt.TrainerState(config=cfg.to_dict(), world_size=self.acc.num_processes)
        self.stage = 0

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
        """Load the latest checkpoint (``--resume``), or refuse to overwrite an existing run without it."""
        latest = check_resume(self.out, options)
        if latest is None:
            if self.main:
                self.out.mkdir(parents=True, exist_ok=True)
                atomic.write_json(self.out / RUN_CONTRACT, self._run_contract())
            return
        recorded = self.out / RUN_CONTRACT
        if recorded.is_file() and json.loads(recorded.read_text())["contract"] != self._run_contract()["contract"]:
            started = json.loads(recorded.read_text()).get("init")
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
        self.schedule = saved.with_epochs(self.cfg.optim.epochs)
        if options.lr_scale is not None:
            warmup = options.warmup_epochs if options.warmup_epochs is not None else self.cfg.optim.warmup_epochs
            self.schedule = saved.with_restart(self.state.optimizer_step, options.lr_scale, warmup,
                                               self.cfg.optim.epochs)
        if self.main:
            for name in (STEPS_CSV, EVAL_CSV):
                truncate_after(self.out / name, self.state.optimizer_step)
        log.info("resumed from %s: epoch %d, batch %d, step %d", latest.name, self.state.epoch,
                 self.state.batch_in_epoch, self.state.optimizer_step)

    def _run_contract(self) -> dict:
        """What a resume must match: the contract the head trains under, and the --init it came from."""
        return {"init": str(self.init) if self.init is not None else None,
                "contract": self.head.config.effective_contract.to_dict()}

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
            yield make_batch(items, self.qwen, self.sam)

    # -- monitoring -------------------------------------------------------------------------------------------------

    def validation_batch(self) -> Batch | None:
        if self.val is None:
            return None
        n = min(len(self.val), self.cfg.train.emission_check_samples)
        items = [self.val.item(i, epoch=0) for i in range(n)]
        return make_batch(items, self.qwen, self.sam).to(self.acc.device)

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
        """Clip and step unless the loss or the gradient is non-finite on any rank; returns (stepped, grad norm)."""
        finite = self.acc.reduce(torch.isfinite(loss_sum).float().reshape(1), reduction="sum")
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
            raise NonFiniteLossError(
                f"{self.state.nonfinite_streak} optimizer steps in a row had a NaN/inf loss or gradient (limit "
                f"train.max_nonfinite_steps = {self.cfg.train.max_nonfinite_steps}); stopping. Lower optim.lr, "
                f"check the data, or resume from an earlier checkpoint in {self.checkpoints}")

    def run(self, options: ResumeOptions | None = None) -> TrainResult:
        options = options or ResumeOptions()
        self.restore(options)
        monitor = Monitor(self.out, STEP_FIELDS, EVAL_FIELDS, enabled=self.main)
        if self.main:
            atomic.write_json(self.out / "config.json", self.cfg.to_dict())
        try:
            stopped = self._loop(monitor)
        finally:
            monitor.close()
        final = None
        if not stopped:
            final = self.export()
        if self.main:
            plot_curves(self.out)
            log.info("data: %s", self.dataset.report.summary())
            log.info("non-finite steps skipped: %d", self.state.nonfinite_total)
        return TrainResult(steps=self.state.optimizer_step, epochs_done=self.state.epoch,
                           skipped_steps=self.state.nonfinite_total,
                           skipped_samples=sum(self.dataset.report.skipped.values()), final_dir=final)

    def _loop(self, monitor: Monitor) -> bool:
        """Train to the configured epoch count; returns True if stopped early by ``max_steps``."""
        cfg, state = self.cfg, self.state
        sizes = accumulation_sizes(self.batches_per_epoch, cfg.optim.grad_accum)
        with tqdm(total=cfg.optim.epochs * self.steps_per_epoch, initial=state.optimizer_step, desc="train",
                  unit="step", disable=not self.main, dynamic_ncols=True) as progress:
            return self._epochs(monitor, sizes, progress)

    def _epochs(self, monitor: Monitor, sizes: list[int], progress: tqdm) -> bool:
        """Micro-batch loop: accumulate (no DDP sync until a group's last micro-batch), step, log, checkpoint."""
        cfg, state = self.cfg, self.state
        accum = cfg.optim.grad_accum
        for epoch in range(state.epoch, cfg.optim.epochs):
            self.set_stage(self.schedule.stage(epoch * self.steps_per_epoch))
            start = state.batch_in_epoch if epoch == state.epoch else 0
            sums, loss_sum, samples, t0 = torch.zeros(len(LOSS_TERMS)), torch.zeros(()), 0, time.perf_counter()
            for b, batch in enumerate(self.epoch_batches(epoch, start), start=start):
                last = (b + 1) % accum == 0 or b + 1 == self.batches_per_epoch
                sync = contextlib.nullcontext() if last else self.acc.no_sync(self.model)
                with sync:
                    with self.acc.autocast():
                        terms = self.model(batch.to(self.acc.device), self.stage)
                    self.acc.backward(terms.total / sizes[b])
                values = terms.as_floats()
                sums += torch.tensor([values[k] for k in LOSS_TERMS]) / sizes[b]
                loss_sum = loss_sum + terms.total.detach().float().cpu()
                samples += len(batch.ids)
                if not last:
                    continue
                lrs = self.schedule.apply(self.optimizer, state.optimizer_step)
                ok, norm = self.optimizer_step(loss_sum)
                self.check_nonfinite(ok)
                state.optimizer_step += 1
                state.batch_in_epoch = b + 1
                means = self.acc.reduce(sums.to(self.acc.device), reduction="mean").cpu().tolist()
                row = {"step": state.optimizer_step, "epoch": epoch + 1, "stage": self.stage,
                       **dict(zip(LOSS_TERMS, means)), "grad_norm": norm, "skipped": int(not ok),
                       **{f"lr_{g}": v for g, v in lrs.items()},
                       "samples_per_s": samples * self.acc.num_processes / (time.perf_counter() - t0)}
                if self.stage == 1:
                    row["lm"] = ""  # not computed: nothing the LM loss could train is active in stage 1
                every = cfg.train.emission_every_steps
                if every and state.optimizer_step % every == 0:
                    row.update(self.quick_validation())
                    self.acc.wait_for_everyone()
                if state.optimizer_step % cfg.train.log_every == 0:
                    monitor.log_step(row)
                progress.update(1)
                progress.set_postfix(loss=f"{row['total']:.4f}", stage=self.stage, epoch=epoch + 1)
                sums, loss_sum, samples, t0 = torch.zeros(len(LOSS_TERMS)), torch.zeros(()), 0, time.perf_counter()
                if self.max_steps is not None and state.optimizer_step >= self.max_steps:
                    self.save()
                    log.info("stopped after --max-steps %d", self.max_steps)
                    return True
                if cfg.train.save_every_steps and state.optimizer_step % cfg.train.save_every_steps == 0:
                    self.save()
            state.epoch, state.batch_in_epoch = epoch + 1, 0
            if cfg.train.eval_every_epochs and (epoch + 1) % cfg.train.eval_every_epochs == 0:
                self.full_evaluation(monitor, epoch)
                self.acc.wait_for_everyone()
            self.save()
        return False

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
