"""Run by ``torch.distributed.run`` (2 CPU processes, gloo) in test_train_sharding.py.

Shards the tiny training module with FSDP2 into the units ``accelerate``'s FSDP2 plugin makes under
``configs/accelerate/fsdp.yaml`` (Qwen decoder layers and vision blocks, SAM3 ViT layers; the module is the root) and
checks, on every rank, against the same module trained unsharded in-process:

1. rank-local work inside ``gathered_weights`` (rank 0 generates alone, rank 1 runs a different number of forwards)
   works before the first training forward and after training, and equals the unsharded module's result;
2. two sharded steps (stage 1, then stage 2 with LoRA + SEG rows) give the unsharded run's weights and AdamW state,
   gathered in full by ``sharding.trainable_state`` / ``optimizer_state`` and written by ``save_checkpoint``;
3. a fresh sharded module resumed from that checkpoint takes a third step identical to the uninterrupted one;
4. the head + adapter exported from the gathered state load into a pipeline that segments like the unsharded module.

Usage: train_fsdp_worker.py DATA OUT
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.bridge.head import DetectureHead, HeadConfig
from detecture.pipeline import DetecturePipeline
from detecture.prompts import Regime, format_response
from detecture.training import checkpoint as ckpt
from detecture.training import sharding
from detecture.training.batching import make_batch
from detecture.training.config import Config, DataConfig
from detecture.training.dataset import TextureDataset
from detecture.training.model import TrainModule
from detecture.training.trainable import apply_lora, build_optimizer, param_groups

STAGES = (1, 2, 2)
FSDP_CONFIG = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp.yaml"


def fsdp_units(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules accelerate's FSDP2 plugin shards as units under ``configs/accelerate/fsdp.yaml`` (its launch
    parsing, environment and auto-wrap policy), innermost first, the root excluded."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(
        ["--config_file", str(FSDP_CONFIG), "script.py"]))
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        plugin = FullyShardedDataParallelPlugin()
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    assert plugin.fsdp_version == 2
    plugin.set_auto_wrap_policy(module)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, module)
    return [m for m in reversed(list(module.modules())) if m is not module and policy(m)]


def build(sharded: bool) -> tuple[TrainModule, torch.optim.Optimizer, DetecturePipeline]:
    cfg = Config()
    cfg.lora.dropout = 0.0
    qwen, sam = QwenVL.tiny(0), Sam3Backbone.tiny(0)
    apply_lora(qwen, cfg.lora, gradient_checkpointing=False)
    torch.manual_seed(0)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, bridge_dropout=0.0))
    module = TrainModule(qwen, sam, head, cfg.loss)
    if sharded:
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for unit in fsdp_units(module):
            fully_shard(unit, mesh=mesh)
        fully_shard(module, mesh=mesh)
    optimizer = build_optimizer(param_groups(module, cfg.optim.weight_decay), cfg.optim)  # after sharding
    return module, optimizer, DetecturePipeline(qwen, sam, head, max_new_tokens=12)


def step(module: TrainModule, optimizer: torch.optim.Optimizer, batch, stage: int) -> None:
    module.qwen.model.train(stage == 2)
    module(batch, stage).total.backward()
    norm = torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.grad is not None], 1.0)
    assert torch.isfinite(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def local_work(module: TrainModule, pipeline: DetecturePipeline, batch, item, rank: int):
    """Rank 0 generates (many forwards) and segments with a forced response (head + SAM3); rank 1 runs the frozen
    re-encode twice. Inside ``gathered_weights``."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    with torch.no_grad(), sharding.gathered_weights(module):
        if rank == 0:
            regime = Regime.oracle(len(item.descriptions))
            result = [*pipeline.segment([item.image], regime),
                      *pipeline.segment([item.image], regime, forced_responses=[format_response(item.descriptions)])]
        else:
            result = None
            for _ in range(2):
                module.seg_states_frozen(batch.qwen_inputs, batch.counts)
    for m, training in modes.items():
        m.train(training)
    return result


def exported_module(pipeline: DetecturePipeline) -> TrainModule:
    return TrainModule(pipeline.qwen, pipeline.sam3, pipeline.head, Config().loss)


def same_result(results, expected) -> None:
    assert expected[1].num_regions == 2
    for a, b in zip(results, expected, strict=True):
        assert a.response == b.response, (a.response, b.response)
        np.testing.assert_allclose(a.region_logits, b.region_logits, rtol=1e-4, atol=1e-4)


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    dataset = TextureDataset(data, DataConfig(), seed=0)
    items = [dataset.item(i, epoch=0) for i in range(2)]  # the same batch on both ranks: averaging keeps it exact

    reference, ref_opt, ref_pipeline = build(sharded=False)
    batch = make_batch(items, reference)
    before = local_work(reference, ref_pipeline, batch, items[0], rank=0)
    snapshots = []
    for stage in STAGES:
        step(reference, ref_opt, batch, stage)
        snapshots.append((sharding.trainable_state(reference), sharding.optimizer_state(reference, ref_opt)))

    module, optimizer, pipeline = build(sharded=True)
    assert isinstance(module, FSDPModule) and isinstance(module.head.bridge.proj.weight, DTensor)
    result = local_work(module, pipeline, batch, items[0], rank)  # before any training forward (lazy init)
    if rank == 0:
        same_result(result, before)
    for stage in STAGES[:2]:
        step(module, optimizer, batch, stage)
    weights, moments = sharding.trainable_state(module), sharding.optimizer_state(module, optimizer)
    if rank == 0:
        ref_weights, ref_moments = snapshots[1]
        assert weights.keys() == ref_weights.keys() and any("lora_" in n for n in weights)
        for name in ref_weights:
            torch.testing.assert_close(weights[name], ref_weights[name], msg=name)
        assert moments["state"].keys() == ref_moments["state"].keys()
        for name, values in ref_moments["state"].items():
            for key, value in values.items():
                torch.testing.assert_close(moments["state"][name][key], value, msg=f"{name}.{key}")
        ckpt.save_checkpoint(out / "checkpoints" / "step-2", weights, moments, ckpt.TrainerState(optimizer_step=2),
                             [ckpt.capture_rng()])
    else:
        assert weights == {} and moments == {}  # gathered on rank 0 only
    dist.barrier()

    resumed, resumed_opt, resumed_pipeline = build(sharded=True)
    ckpt.load_checkpoint(out / "checkpoints" / "step-2", resumed, resumed_opt, rank)
    step(module, optimizer, batch, STAGES[2])
    step(resumed, resumed_opt, batch, STAGES[2])
    uninterrupted, again = sharding.trainable_state(module), sharding.trainable_state(resumed)
    if rank == 0:
        for name, value in uninterrupted.items():
            assert torch.equal(again[name], value), name
            torch.testing.assert_close(value, snapshots[2][0][name], msg=name)

    after = local_work(reference, ref_pipeline, batch, items[0], rank=0)
    result = local_work(resumed, resumed_pipeline, batch, items[0], rank)
    trainable = sharding.trainable_state(resumed)
    if rank == 0:
        ckpt.export_trained(out / "final", resumed, trainable)
    if rank == 0:
        same_result(result, after)
        exported = DetecturePipeline.tiny(head=out / "final", max_new_tokens=12)
        same_result(local_work(exported_module(exported), exported, batch, items[0], rank), after)
    dist.barrier()
    print(f"rank {rank} ok", flush=True)
    dist.destroy_process_group()
    gc.freeze()  # the process ends here: skips the exit's garbage collection over torch + transformers (seconds)


if __name__ == "__main__":
    main()
