"""Everything a training run is made of, built from a :class:`~detecture.training.config.Config` in one place.

:func:`build_parts` reads the data first (a bad dataset fails before minutes of backbone loading), then the
backbones, the head (fresh, or from ``--init``), the LoRA, the optimizer, the loader, the schedule and the stage-1
feature cache, and hands them to the :class:`~detecture.training.loop.Trainer`, which only runs the loop. A test or
a benchmark can build its own parts (e.g. random full-size backbones) without going through the trainer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..backbones.loading import default_attn_implementation, default_dtype
from ..backbones.qwen import QwenVL
from ..backbones.sam3 import Sam3Backbone
from ..bridge.head import DetectureHead, HeadConfig, head_digest
from ..errors import DetectureError
from ..pipeline import apply_contract
from .config import Config
from .dataset import EpochSampler, TextureDataset, collate_items
from .feature_cache import FeatureCache
from .model import TrainModule
from .schedule import LRSchedule
from .trainable import apply_lora, build_optimizer, load_adapter_weights, param_groups, parameter_table

log = logging.getLogger(__name__)

TRACKER_RUN = "tensorboard"  # accelerate's TensorBoard tracker writes <out>/tensorboard/


@dataclass
class TrainingParts:
    """The built run: ``model`` / ``optimizer`` are what ``accelerator.prepare`` returned for ``module`` and the
    AdamW over its parameter groups."""

    accelerator: object
    dataset: TextureDataset
    val: TextureDataset | None
    qwen: QwenVL
    sam: Sam3Backbone
    head: DetectureHead
    module: TrainModule
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    loader: DataLoader
    schedule: LRSchedule
    batches_per_epoch: int
    steps_per_epoch: int
    cache: FeatureCache | None
    init: Path | None
    contract: dict  # run_contract(head, init), computed once (it hashes the --init head's files)


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


def run_contract(head: DetectureHead, init: Path | None) -> dict:
    """The contract the head trains under (which a resume must match), and the --init it came from: its path and
    the digest of its files (:func:`~detecture.bridge.head.head_digest`), so that the stage-1 feature
    cache, whose SEG states the init adapter decides, is keyed by what the head folder holds, not by its name."""
    return {"init": str(init) if init is not None else None,
            "init_weights": head_digest(init) if init is not None else None,
            "contract": head.config.effective_contract.to_dict()}


def build_accelerator(cfg: Config, out: Path):
    """One ``Accelerator`` for CPU, one GPU or N GPUs, logging to TensorBoard through its tracker when installed."""
    import importlib.util

    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    mixed = cfg.train.mixed_precision if torch.cuda.is_available() else "no"
    if mixed != cfg.train.mixed_precision:
        log.info("no CUDA device: training in fp32 (bf16 autocast on CPU is slower, not faster)")
    tracker = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    if tracker is None:  # a declared dependency, but the CSV log is enough to train
        log.warning("tensorboard is not installed; logging to CSV only")
    # LoRA / SEG rows take no part in stage-1 forwards, so DDP must tolerate unused parameters.
    # cpu=True on CPU-only machines: several launched processes then form a gloo (MULTI_CPU) group.
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available(), log_with=tracker,
                       project_dir=str(out),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def build_parts(cfg: Config, data: Path, out: Path, val_data: Path | None = None,
                backbones: tuple[QwenVL, Sam3Backbone] | None = None, init: Path | None = None) -> TrainingParts:
    """Build a run. ``backbones`` replaces loading from ``cfg.model`` (e.g. random full-size architectures in
    benchmarks). ``init`` is a head folder (``detecture train`` output or ``detecture convert``): training starts
    from its head and adapter and runs under its inference contract, applied to the backbones here by
    :func:`~detecture.pipeline.apply_contract` (prompts, Qwen image, embedding shrink, SAM3's ViT epsilon), so every
    rank trains, caches features and validates under it from the first step on."""
    from accelerate.utils import DistributedType, set_seed

    acc = build_accelerator(cfg, Path(out))
    check_launch(acc.state, cfg.model.quantization)
    set_seed(cfg.train.seed)
    dataset = TextureDataset(data, cfg.data, cfg.train.seed, train=True)
    val = TextureDataset(val_data, cfg.data, cfg.train.seed, train=False) if val_data else None
    if val is None and (cfg.train.eval_every_epochs or cfg.train.emission_every_steps):
        log.info("no --val-data: live evaluation and SEG-emission checks are off")
    init_head = DetectureHead.from_pretrained(init) if init is not None else None  # fail before backbones load
    if init_head is not None:
        cfg.check_init_head(init_head.config, init)
    qwen, sam = backbones or load_backbones(cfg, acc.device, acc.distributed_type == DistributedType.FSDP)
    if init_head is not None:
        init_head.fit_to(qwen, sam, init)  # its widths checked; records this run's backbones, not the init's
        init_head.config.contract = init_head.config.effective_contract  # the run writes what it trained under
    head = init_head or DetectureHead(HeadConfig.for_backbones(qwen, sam, **cfg.model.head))
    apply_contract(qwen, sam, head.config.effective_contract)  # every rank, before any step or feature caching
    apply_lora(qwen, cfg.lora, quantized=cfg.model.quantization is not None,
               gradient_checkpointing=cfg.model.gradient_checkpointing)
    adapter = DetectureHead.adapter_path(init) if init is not None else None
    if adapter is not None:
        load_adapter_weights(qwen, adapter, cfg.lora)
    head.to(acc.device)  # backbones are placed by their loaders (a 4-bit Qwen must not be moved)
    module = TrainModule(qwen, sam, head, cfg.loss)
    groups = param_groups(module, cfg.optim.weight_decay)
    optimizer = build_optimizer(groups, cfg.optim)
    if acc.is_main_process:
        print(parameter_table(groups, cfg.optim, sum(p.numel() for p in module.parameters() if not p.requires_grad)))
    sampler = EpochSampler(len(dataset), cfg.train.seed, acc.process_index, acc.num_processes)
    # Own generator: creating a DataLoader iterator must not draw from the global RNG (exact resume).
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler, collate_fn=collate_items,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.train.seed))
    batches_per_epoch = math.ceil(len(sampler.indices()) / cfg.optim.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.optim.grad_accum)
    # The optimizer goes through prepare() too: FSDP re-maps parameters to their shards at wrap time.
    model, optimizer = acc.prepare(module, optimizer, device_placement=[False, False])
    contract = run_contract(head, init)
    cache = None
    if cfg.cache.enabled:
        cache = FeatureCache(Path(cfg.cache.dir or Path(out) / "feature_cache"), cfg, dataset, contract)
    return TrainingParts(acc, dataset, val, qwen, sam, head, module, model, optimizer, sampler, loader,
                         LRSchedule.from_config(cfg.optim, steps_per_epoch), batches_per_epoch, steps_per_epoch,
                         cache, init, contract)
