"""Train the 3D encoder against cached frozen-space features (ULIP-2's recipe).

Runs as one process or under torchrun (DDP: NCCL on GPUs, gloo on CPUs). Every random
choice (data order, augmentation, which caption and view, stochastic depth) is derived
from (seed, epoch, sample), so `resume` continues bit for bit from the last checkpoint
and N processes see the same global batches as one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from core.bundle import bundle_path
from core.progress import OnProgress
from core.models import create_encoder, get_config
from core.upright import Upright

from .augment import Augment, subsample
from .features import TripletFeatures
from .loss import LogitScale, contrastive_loss

CHECKPOINT = "last.pt"
ENCODER_FILE = "encoder.safetensors"


@dataclasses.dataclass
class TrainConfig:
    encoder: str = "pointbert-small"
    epochs: int = 10
    batch_size: int = 64          # global batch (split evenly over processes)
    lr: float = 3e-3
    lr_start: float = 1e-6        # warm-up rises linearly from here to lr (ULIP's --lr-start)
    lr_end: float = 1e-5          # the cosine falls from lr to here (ULIP's --lr-end)
    weight_decay: float = 0.1     # on weights of 2+ dimensions only (not biases, norms, the logit scale)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_epochs: float = 1.0
    grad_clip: float = 10.0       # Point-BERT's grad_norm_clip
    amp: bool = True              # bf16 autocast (autocast_dtype says where; fp16 + scaler on GPUs without bf16)
    seed: int = 0
    up_axis: str = "y"
    random_up: bool = False       # turn each sample's up axis onto any axis direction (Augment.random_up)
    init: str | None = None       # start from: a bundle folder, a ULIP-2 .pt or a ulip2 .safetensors
    upright: str | None = None    # an up-axis scorer (core.upright): train on the frames it leaves (Augment.upright)
    known_frame: float = 0.0      # with upright: the share of samples left as stated (Augment.known_frame)

    def __post_init__(self):
        if self.upright and self.random_up:
            raise ValueError("random_up and upright are two answers to the up axis; choose one")
        if not 0 <= self.known_frame <= 1 or (self.known_frame and not self.upright):
            raise ValueError(f"known_frame {self.known_frame}: a share from 0 to 1 of the samples an up-axis "
                             "scorer (upright) would turn; give the scorer too")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> torch.device:
    """Join the torchrun group if launched by torchrun; pick this process's device."""
    if "RANK" in os.environ and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _same(value):
    """Settings as a checkpoint stores them (tuples come back as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _lr_at(step: int, total: int, warmup: int, base: float, start: float, end: float) -> float:
    """ULIP's schedule (utils.cosine_scheduler): linear from `start` to `base` over the
    warm-up steps, then a cosine from `base` down to `end`, reached at the last step."""
    if step < warmup:
        return start + (base - start) * step / max(1, warmup - 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    return end + 0.5 * (base - end) * (1 + math.cos(math.pi * progress))


def autocast_dtype(device: torch.device, amp: bool = True) -> torch.dtype | None:
    """The mixed precision a run on `device` trains in: bf16 on a GPU that has it (fp16, with a
    loss scaler, on one that does not) and on a CPU with bf16 instructions (AVX512-BF16 or
    AMX: 1.5x faster steps for pointbert-lite on 2 cores here); float32 elsewhere, where bf16
    would be emulated and slower."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def parameter_groups(model: torch.nn.Module, scale: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as ULIP makes them: decay on weights of 2+ dimensions (linear and conv
    weights, tokens, embeddings); none on biases, norm weights or the logit scale."""
    params = list(model.parameters()) + list(scale.parameters())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


class Trainer:
    def __init__(self, features: TripletFeatures, config: TrainConfig, out: str | os.PathLike,
                 device: torch.device | None = None, groups=None):
        """`groups`, one label per object (its source, say): each batch is drawn from one group,
        so an object's in-batch negatives are of its own kind and the loss must tell a chair
        from a sofa, not furniture from a tank; what does not fill a batch is mixed."""
        self.features, self.config, self.out = features, config, Path(out)
        self.status = ""  # the last step's loss and learning rate, for a progress display
        self.groups = None if groups is None else np.asarray(groups)
        if self.groups is not None and len(self.groups) != len(features):
            raise ValueError(f"{len(self.groups)} group labels for {len(features)} objects")
        self.device = device or torch.device("cpu")
        self.rank, self.world = _world()
        if config.batch_size % self.world:
            raise ValueError(f"batch size {config.batch_size} does not split over {self.world} processes")
        if len(features) < config.batch_size:
            raise ValueError(f"{len(features)} objects are fewer than one batch of {config.batch_size}")
        torch.manual_seed(config.seed)
        if config.init and bundle_path(config.init).is_dir():  # a bundle (or `default`): fine-tune what it runs
            from core.bundle import read_bundle
            from core.export import load_bundle_model

            bundle = read_bundle(config.init, warn_untrained=False)
            if bundle.space != features.space:
                raise ValueError(f"bundle {bundle.path} is in space {bundle.space!r}, the features in {features.space!r}")
            model = load_bundle_model(bundle)
        else:
            model = create_encoder(get_config(config.encoder).with_embed_dim(features.dim))
            if config.init:
                from core.models.checkpoint import load_encoder_weights

                load_encoder_weights(model, config.init)
        self.encoder_config = model.config
        self.model = model.to(self.device)
        self.scale = LogitScale().to(self.device)
        self.ddp = None
        if self.world > 1 and self.device.type == "cuda":
            # Batch statistics over the global batch, as one process would see them
            # (SyncBatchNorm needs CUDA; on CPU each process normalises its own share).
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, self.scale, config.weight_decay),
                                           lr=config.lr, betas=config.betas)
        self.steps_per_epoch = len(self._batches(0))  # the same every epoch
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup_steps = int(config.warmup_epochs * self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(self.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.augment = Augment(up=config.up_axis, random_up=config.random_up,
                               upright=Upright.load(config.upright) if config.upright else None,
                               known_frame=config.known_frame)
        self.epoch = 0  # epochs completed

    # -- data ---------------------------------------------------------------------------
    def _sample(self, index: int, epoch: int):
        rng = np.random.default_rng([self.config.seed, epoch, index])
        stored = subsample(self.features.points[index], self.encoder_config.num_points, rng)
        points = self.augment(np.asarray(stored, dtype=np.float32), rng)
        texts = self.features.texts_of(index)
        text = texts[rng.integers(len(texts))]
        images = self.features.images_of(index)
        image = images[rng.integers(len(images))] if images is not None else None
        return points, text, image

    def _batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of `epoch`: object indices, batch_size each."""
        rng = np.random.default_rng([self.config.seed, epoch])
        size = self.config.batch_size
        if self.groups is None:
            order = rng.permutation(len(self.features))
            return [order[s * size:(s + 1) * size] for s in range(len(order) // size)]
        batches, rest = [], []
        for group in np.unique(self.groups):
            members = rng.permutation(np.flatnonzero(self.groups == group))
            full = len(members) // size * size
            batches += [members[s:s + size] for s in range(0, full, size)]
            rest.append(members[full:])
        rest = rng.permutation(np.concatenate(rest))
        batches += [rest[s:s + size] for s in range(0, len(rest) - size + 1, size)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def _local_batches(self, epoch: int):
        """This process's share of each global batch, in rank order (what gather_batch undoes)."""
        per_rank = self.config.batch_size // self.world
        for batch in self._batches(epoch):
            share = batch[self.rank * per_rank:(self.rank + 1) * per_rank]
            samples = [self._sample(int(i), epoch) for i in share]
            points = torch.from_numpy(np.stack([s[0] for s in samples]))
            text = torch.from_numpy(np.stack([s[1] for s in samples]).astype(np.float32))
            image = (torch.from_numpy(np.stack([s[2] for s in samples]).astype(np.float32))
                     if samples[0][2] is not None else None)
            yield points, text, image

    # -- loop ---------------------------------------------------------------------------
    def train_epoch(self, on_step: Callable[[], None] | None = None) -> dict:
        epoch = self.epoch
        torch.manual_seed(self.config.seed * 100_003 + epoch)  # stochastic depth, per epoch
        model = self.ddp or self.model
        model.train()
        sums, start = {}, time.perf_counter()
        for step, (points, text, image) in enumerate(self._local_batches(epoch)):
            global_step = epoch * self.steps_per_epoch + step
            lr = _lr_at(global_step, self.total_steps, self.warmup_steps, self.config.lr,
                        self.config.lr_start, self.config.lr_end)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            points, text = points.to(self.device), text.to(self.device)
            image = image.to(self.device) if image is not None else None
            autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                        else contextlib.nullcontext())
            with autocast:
                embedded = model(points)
            losses = contrastive_loss(embedded, text, image, self.scale())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"] * self.world).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scale.clamp_()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value.item()
            self.status = f"loss={losses['loss'].item():.3f}, lr={lr:.2e}"
            if on_step is not None:
                on_step()
        self.epoch += 1
        metrics = {k: v / self.steps_per_epoch for k, v in sums.items()}
        metrics |= {"epoch": self.epoch, "lr": lr, "logit_scale": self.scale().detach().item(),
                    "seconds": round(time.perf_counter() - start, 3)}
        return metrics

    def fit(self, on_progress: OnProgress | None = None) -> list[dict]:
        """Train to config.epochs from where the run stands, each epoch checkpointed before
        its metrics line. on_progress: (steps done, steps in all), as core.progress says
        (on rank 0 only); `status` holds the last step's loss and learning rate."""
        history = []
        self.out.mkdir(parents=True, exist_ok=True)
        done, total = self.epoch * self.steps_per_epoch, self.config.epochs * self.steps_per_epoch
        show = on_progress if self.rank == 0 else None

        def step() -> None:
            nonlocal done
            done += 1
            show(done, total)

        if show is not None:
            show(done, total)
        while self.epoch < self.config.epochs:
            metrics = self.train_epoch(step if show is not None else None)
            history.append(metrics)
            if self.rank == 0:
                # Checkpoint first: a metrics line means its epoch is safely on disk.
                self.save_checkpoint()
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(metrics) + "\n")
            if self.world > 1:
                dist.barrier()
        return history

    # -- checkpoints --------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.epoch,
            "config": dataclasses.asdict(self.config),
            "encoder_config": self.encoder_config.to_dict(),
            "space": self.features.space,
            "model": self.model.state_dict(),
            "logit_scale": self.scale.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        """last.pt (everything needed to resume) and encoder.safetensors (weights for export),
        each written to a temporary file and renamed, so a kill never leaves half a file."""
        from safetensors.torch import save_file

        self.out.mkdir(parents=True, exist_ok=True)
        target = self.out / CHECKPOINT
        torch.save(self.state(), target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
        weights = self.out / ENCODER_FILE
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(weights) + ".tmp",
                  metadata={"encoder_config": json.dumps(self.encoder_config.to_dict()), "space": self.features.space})
        os.replace(str(weights) + ".tmp", weights)
        return target

    def resume(self) -> bool:
        """Continue from out/last.pt if it exists; True when resumed. The run's settings must
        match the checkpoint's, but for the epoch count (a run may be extended) and AMP."""
        path = self.out / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["space"] != self.features.space:
            raise ValueError(f"{path} was trained in space {state['space']!r}, the features are in {self.features.space!r}")
        current = dataclasses.asdict(self.config)
        differ = sorted(k for k, v in state["config"].items()
                        if k not in ("epochs", "amp") and k in current and _same(v) != _same(current[k]))
        if differ:
            settings = ", ".join(f"{k}={state['config'][k]!r}" for k in differ)
            raise ValueError(f"{path} was trained with other settings ({settings}); "
                             "resume with those, or train into a new folder")
        self.model.load_state_dict(state["model"])
        self.scale.load_state_dict(state["logit_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        return True
