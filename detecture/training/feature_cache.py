"""Stage-1 feature cache: in stage 1 both backbones are frozen, so their outputs are a pure function of the sample.

For each sample (and each of ``cache.views`` augmented views, view ``v`` being the augmentation of epoch ``v``) the
cache stores the teacher-forced SEG states (K, H), the target masks, and either the SAM3 FPN vision features or the
SAM3 input pixels. Stage-1 epochs then run only the head and SAM3's prompt-dependent decoder. Shards are safetensors
files written atomically by each rank for its share of the samples; ``complete.json`` (written last, by the main
process) records a fingerprint of everything the features depend on, so a stale cache is rebuilt, never reused.

All ranks read all shards (the per-epoch permutation mixes samples across ranks), so ``--out`` must be on a file
system every process can read — true on one machine; on several nodes use a shared file system.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from ..errors import CheckpointError
from ..utils import atomic
from ..utils.json_files import read_json_object
from .batching import make_batch
from .config import Config
from .dataset import EpochSampler, TextureDataset
from .model import Batch, TrainModule

log = logging.getLogger(__name__)

COMPLETE = "complete.json"


# Raised whenever the code changes what a cached view holds (how its text or pixels are made) or what its key holds,
# so that a cache an older version built, in a shared cache.dir say, is rebuilt rather than read.
CACHE_FORMAT = 5


def fingerprint(cfg: Config, dataset: TextureDataset, run_contract: dict | None = None) -> str:
    """Hash of what cached features depend on: the cache format, backbones, data, augmentation, seed, views, dtype,
    vision flag, and the run's contract and ``--init`` head, by the digest of its weight files (prompts, positions,
    Qwen image and the adapter all change the SEG states)."""
    relevant = {
        "format": CACHE_FORMAT,
        "run_contract": run_contract,
        "model": [cfg.model.qwen, cfg.model.sam3, cfg.model.tiny, cfg.model.quantization],
        "data": cfg.to_dict()["data"],
        "seed": cfg.train.seed,
        "cache": [cfg.cache.views, cfg.cache.dtype, cfg.cache.vision],
        "records": dataset.report.digest,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Build (once) and read the stage-1 cache in ``directory``."""

    def __init__(self, directory: Path, cfg: Config, dataset: TextureDataset, run_contract: dict | None = None) -> None:
        self.dir = Path(directory)
        self.cfg = cfg
        self.dataset = dataset
        self.dtype = getattr(torch, cfg.cache.dtype)
        self.key = fingerprint(cfg, dataset, run_contract)
        self._index: dict[str, str] | None = None
        self._handles: dict[str, object] = {}

    def is_complete(self) -> bool:
        marker = self.dir / COMPLETE
        if not marker.exists():
            return False
        try:
            if read_json_object(marker, "cache marker").get("fingerprint") != self.key:
                return False
            self._index = self._read_index()
        except CheckpointError as exc:  # the cache is derived data: a damaged one means building it again
            log.warning("%s; the feature cache is built again", exc)
            return False
        return True

    def _read_index(self) -> dict[str, str]:
        """Tensor name -> shard file, from every rank's index; one that is damaged, names a shard that is not there,
        or leaves a sample's view out is a :class:`CheckpointError` (disk damage after the marker was written)."""
        index: dict[str, str] = {}
        for path in sorted(self.dir.glob("index-rank*.json")):
            index.update(read_json_object(path, "feature-cache index"))
        if not all(isinstance(name, str) for name in index.values()):
            raise CheckpointError(f"{self.dir}: a feature-cache index maps a tensor to something not a file name")
        for name in set(index.values()):
            if Path(name).name != name or not (self.dir / name).is_file():
                raise CheckpointError(f"{self.dir}: the feature-cache index names a missing shard {name!r}")
        for view in range(self.cfg.cache.views):
            for i in range(len(self.dataset)):
                if f"{view}.{i}.seg" not in index:
                    raise CheckpointError(f"{self.dir}: the feature-cache index lacks sample {i} of view {view}")
        return index

    @torch.no_grad()
    def build(self, module: TrainModule, accelerator) -> None:
        """Compute this rank's share of (view, sample) features and write them in shards; main marks completion."""
        if self.is_complete():
            log.info("feature cache %s is up to date", self.dir)
            return
        rank, world = accelerator.process_index, accelerator.num_processes
        if accelerator.is_main_process:  # stale shards / indexes of another build must never be merged in
            for pattern in (COMPLETE, "index-rank*.json", "view*-rank*-*.safetensors"):
                for stale in self.dir.glob(pattern):
                    stale.unlink()
        accelerator.wait_for_everyone()
        self.dir.mkdir(parents=True, exist_ok=True)
        bs = self.cfg.optim.batch_size
        index: dict[str, str] = {}
        pos_written = False
        for view in range(self.cfg.cache.views):
            mine = list(range(rank, len(self.dataset), world))
            shard: dict[str, torch.Tensor] = {}
            in_shard, shard_no = 0, 0
            for start in range(0, len(mine), bs):
                chunk = mine[start : start + bs]
                batch = make_batch([self.dataset.item(i, epoch=view) for i in chunk], module)
                batch = batch.to(accelerator.device)
                states = module.seg_states_frozen(batch.qwen_inputs, batch.counts)
                vision = module.sam3.vision_features(batch.pixel_values) if self.cfg.cache.vision else None
                for j, i in enumerate(chunk):
                    prefix = f"{view}.{i}"
                    shard[f"{prefix}.seg"] = states[j].to(self.dtype)
                    shard[f"{prefix}.masks"] = batch.masks[j].to(torch.uint8)
                    if vision is None:
                        shard[f"{prefix}.pixels"] = batch.pixel_values[j].to(self.dtype)
                        continue
                    for level, f in enumerate(vision.fpn_hidden_states):
                        shard[f"{prefix}.fpn{level}"] = f[j].to(self.dtype)
                    if not pos_written:  # sine position encodings depend on the feature shape only
                        shard.update({f"pos{lv}": p[0].to(self.dtype)
                                      for lv, p in enumerate(vision.fpn_position_encoding)})
                        pos_written = True
                in_shard += len(chunk)
                if in_shard >= self.cfg.cache.shard_samples or start + bs >= len(mine):
                    name = f"view{view}-rank{rank}-{shard_no:05d}.safetensors"
                    with atomic.atomic_path(self.dir / name) as tmp:
                        save_file({k: v.detach().cpu().contiguous() for k, v in shard.items()}, str(tmp))
                    index.update({k: name for k in shard})
                    shard, in_shard, shard_no = {}, 0, shard_no + 1
        atomic.write_json(self.dir / f"index-rank{rank}.json", index, indent=None)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic.write_json(self.dir / COMPLETE, {"fingerprint": self.key, "processes": world})
        accelerator.wait_for_everyone()
        log.info("feature cache written to %s", self.dir)

    def _tensor(self, key: str) -> torch.Tensor:
        if self._index is None:
            self._index = self._read_index()
        name = self._index[key]
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.dir / name), framework="pt")
        return self._handles[name].get_tensor(key)

    def batch(self, indices: list[int], view: int, sam_dtype: torch.dtype) -> Batch:
        """A cached stage-1 batch: SEG states, masks, and vision features (or pixels for SAM3's ViT)."""
        prefixes = [f"{view}.{i}" for i in indices]
        states = [self._tensor(f"{p}.seg") for p in prefixes]
        batch = Batch(
            ids=[self.dataset.report.kept[i].id for i in indices],
            masks=[self._tensor(f"{p}.masks").bool() for p in prefixes],
            counts=[s.shape[0] for s in states],
            seg_states=states,
        )
        if not self.cfg.cache.vision:
            batch.pixel_values = torch.stack([self._tensor(f"{p}.pixels") for p in prefixes]).to(sam_dtype)
            return batch
        levels = sorted({int(k.split("fpn")[1]) for k in self._index_keys(prefixes[0])})
        fpn = tuple(torch.stack([self._tensor(f"{p}.fpn{lv}") for p in prefixes]).to(sam_dtype) for lv in levels)
        pos = tuple(self._tensor(f"pos{lv}")[None].expand(len(indices), -1, -1, -1).to(sam_dtype) for lv in levels)
        # last_hidden_state (the ViT output before the FPN) is not read by the prompt/mask path; an empty
        # placeholder keeps the output type while saving ~10 MB per 1008² image.
        batch.vision = Sam3VisionEncoderOutput(last_hidden_state=fpn[0].new_zeros(len(indices), 0),
                                               fpn_hidden_states=fpn, fpn_position_encoding=pos)
        return batch

    def _index_keys(self, prefix: str) -> list[str]:
        self._tensor(f"{prefix}.seg")  # loads the index
        return [k for k in self._index if k.startswith(prefix + ".fpn")]

    def epoch_batches(self, sampler: EpochSampler, epoch: int, start_batch: int, sam_dtype: torch.dtype
                      ) -> Iterator[Batch]:
        """This rank's stage-1 micro-batches of ``epoch`` from the cache, in the same order as the live path."""
        bs = self.cfg.optim.batch_size
        sampler.set_epoch(epoch, start_batch * bs)
        order = list(sampler)
        view = epoch % self.cfg.cache.views
        for s in range(0, len(order), bs):
            yield self.batch(order[s : s + bs], view, sam_dtype)
