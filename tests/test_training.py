"""Trainer mechanics on tiny synthetic data (pointbert-tiny, random init, 16-d targets):
the loss falls, resume is bit for bit, a killed run resumes, and 2 gloo processes match 1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from training.features import TripletFeatures
from training.loss import contrastive_loss
from training.trainer import CHECKPOINT, Trainer, TrainConfig


def _shape(kind: int, rng: np.random.Generator, n: int = 512) -> np.ndarray:
    """Points of one of four shape classes, with a class colour: something learnable."""
    u = rng.normal(size=(n, 3))
    if kind == 0:  # sphere
        xyz = u / np.linalg.norm(u, axis=1, keepdims=True)
    elif kind == 1:  # flat square
        xyz = np.c_[rng.uniform(-1, 1, n), np.zeros(n), rng.uniform(-1, 1, n)]
    elif kind == 2:  # thin rod
        xyz = np.c_[np.zeros(n), rng.uniform(-1, 1, n), np.zeros(n)] + 0.05 * u
    else:  # cube shell
        xyz = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        xyz[np.arange(n), axis] = np.sign(xyz[np.arange(n), axis])
    rgb = np.tile(np.eye(4)[kind, :3] * 0.8 + 0.1, (n, 1))
    return np.c_[xyz, rgb].astype(np.float32)


def make_features(n_objects: int = 32, dim: int = 16, seed: int = 0) -> TripletFeatures:
    rng = np.random.default_rng(seed)
    classes = rng.normal(size=(4, dim))
    points, texts = [], []
    for i in range(n_objects):
        kind = i % 4
        points.append(_shape(kind, rng))
        t = classes[kind] + 0.1 * rng.normal(size=(3, dim))  # three captions per object
        texts.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return TripletFeatures.from_lists("test-space", [str(i) for i in range(n_objects)], points, texts)


CONFIG = dict(encoder="pointbert-tiny", batch_size=8, lr=2e-3, warmup_epochs=0.5)


@pytest.mark.train
def test_two_epochs_decrease_the_loss(tmp_path):
    trainer = Trainer(make_features(), TrainConfig(epochs=4, **CONFIG), tmp_path)
    history = trainer.fit()
    assert history[-1]["loss"] < history[0]["loss"] - 0.1, [h["loss"] for h in history]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert (tmp_path / CHECKPOINT).is_file() and (tmp_path / "encoder.safetensors").is_file()


@pytest.mark.train
def test_resume_continues_bit_for_bit(tmp_path):
    features = make_features()
    straight = Trainer(features, TrainConfig(epochs=2, **CONFIG), tmp_path / "a")
    straight_history = straight.fit()

    interrupted = Trainer(features, TrainConfig(epochs=2, **CONFIG), tmp_path / "b")
    interrupted.out.mkdir()
    interrupted.train_epoch()
    interrupted.save_checkpoint()  # as if killed right after epoch 1's checkpoint
    resumed = Trainer(features, TrainConfig(epochs=2, **CONFIG), tmp_path / "b")
    assert resumed.resume() and resumed.epoch == 1
    resumed_history = resumed.fit()

    assert resumed_history[-1]["loss"] == straight_history[-1]["loss"]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def _linear_output_dtypes(trainer: Trainer) -> set:
    """The dtypes the encoder's first linear layer gives during one training epoch."""
    seen = set()
    layer = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    handle = layer.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    trainer.train_epoch()
    handle.remove()
    return seen


@pytest.mark.train
def test_cpu_steps_run_in_bf16_where_the_cpu_has_bf16_and_in_float32_without_amp(tmp_path):
    """pointbert-tiny, random init: with amp (the default) a CPU with bf16 instructions runs
    the encoder under bf16 autocast, any other CPU in float32; amp=False is float32 always."""
    features = make_features()
    has_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    amp = Trainer(features, TrainConfig(epochs=1, **CONFIG), tmp_path / "amp")
    assert _linear_output_dtypes(amp) == ({torch.bfloat16} if has_bf16 else {torch.float32})
    plain = Trainer(features, TrainConfig(epochs=1, amp=False, **CONFIG), tmp_path / "plain")
    assert _linear_output_dtypes(plain) == {torch.float32}


@pytest.mark.train
def test_the_encoder_file_loads_into_a_fresh_encoder(tmp_path):
    from core.models import create_encoder
    from core.models.checkpoint import load_encoder_weights

    trainer = Trainer(make_features(), TrainConfig(epochs=1, **CONFIG), tmp_path)
    trainer.fit()
    fresh = create_encoder(trainer.encoder_config)
    load_encoder_weights(fresh, tmp_path / "encoder.safetensors")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


_TRAIN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_training import make_features, CONFIG
from training.trainer import Trainer, TrainConfig
trainer = Trainer(make_features(), TrainConfig(epochs=int(sys.argv[2]), **CONFIG), sys.argv[1])
trainer.resume()
trainer.fit()
"""


@pytest.mark.train
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SCRIPT.format(tests=os.path.dirname(__file__)))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(out), "50"])
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.jsonl").is_file(), "no epoch finished in time"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    state = torch.load(out / CHECKPOINT, weights_only=True)  # intact after kill -9
    assert state["epoch"] >= done - 1 >= 0
    resumed = Trainer(make_features(), TrainConfig(epochs=state["epoch"] + 1, **CONFIG), out)
    assert resumed.resume() and resumed.epoch == state["epoch"]
    history = resumed.fit()
    assert [h["epoch"] for h in history] == [state["epoch"] + 1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # 1) the loss itself: each rank holds half of one batch of unit vectors
        gen = torch.Generator().manual_seed(1)
        a = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
        b = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
        half = slice(rank * 4, rank * 4 + 4)
        loss = contrastive_loss(a[half], b[half], None, torch.tensor(10.0))["loss"].item()
        # 2) whole training epochs over the same global batches
        trainer = Trainer(make_features(), TrainConfig(epochs=2, **CONFIG), out)
        history = trainer.fit()
        queue.put((rank, loss, [h["loss"] for h in history]))
    finally:
        dist.destroy_process_group()


@pytest.mark.train
def test_two_gloo_processes_match_one(tmp_path):
    import torch.multiprocessing as mp

    gen = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    single_loss = contrastive_loss(a, b, None, torch.tensor(10.0))["loss"].item()
    single = Trainer(make_features(), TrainConfig(epochs=2, **CONFIG), tmp_path / "one").fit()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(tmp_path / "two"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for _, loss, history in results:
        assert loss == pytest.approx(single_loss, abs=1e-6)
        # The loss over one global batch is exact (above). Training epochs match only
        # roughly: on CPUs each process's BatchNorm normalises its own half batch (here 4
        # objects of very different shapes), which SyncBatchNorm removes on GPUs only.
        assert history == pytest.approx([h["loss"] for h in single], rel=0.15)
        assert history[1] < history[0]


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    """Resuming with another learning rate (or seed, encoder, batch) would silently mix two
    runs; the epoch count may change (a run is extended)."""
    features = make_features()
    first = Trainer(features, TrainConfig(epochs=1, **CONFIG), tmp_path / "run")
    first.out.mkdir()
    first.save_checkpoint()
    with pytest.raises(ValueError, match=r"lr=.*new folder"):
        Trainer(features, TrainConfig(epochs=1, **(CONFIG | {"lr": 2 * CONFIG["lr"]})), tmp_path / "run").resume()
    assert Trainer(features, TrainConfig(epochs=3, **CONFIG), tmp_path / "run").resume()


def test_weight_decay_falls_on_weights_of_two_or_more_dimensions_only(tmp_path):
    """ULIP's groups: biases, norm weights and the logit scale are not decayed."""
    trainer = Trainer(make_features(), TrainConfig(epochs=1, **CONFIG), tmp_path)
    decayed, plain = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(p.ndim >= 2 for p in decayed["params"])
    assert {names[id(p)] for p in decayed["params"]} >= {"blocks.blocks.0.attn.qkv.weight", "cls_token"}
    plain_names = {names.get(id(p), "logit_scale") for p in plain["params"]}
    assert {"logit_scale", "norm.weight", "norm.bias", "blocks.blocks.0.mlp.fc1.bias"} <= plain_names
    assert len(decayed["params"]) + len(plain["params"]) == len(list(trainer.model.parameters())) + 1


@pytest.mark.train
def test_the_logit_scale_parameter_is_clamped_at_log_100_after_each_step(tmp_path):
    trainer = Trainer(make_features(), TrainConfig(epochs=1, **CONFIG), tmp_path)
    with torch.no_grad():
        trainer.scale.log_scale.fill_(7.0)  # exp(7) = 1097, far above the cap
    trainer.train_epoch()
    assert trainer.scale.log_scale.item() <= np.log(100) + 1e-6
    assert trainer.scale().item() <= 100.0 + 1e-4


def test_learning_rate_warms_up_from_lr_start_and_ends_at_lr_end():
    """ULIP's cosine_scheduler: linear warm-up from 1e-6 to lr, cosine down to 1e-5."""
    from training.trainer import _lr_at

    total, warmup, base = 100, 10, 3e-3
    lrs = [_lr_at(s, total, warmup, base, 1e-6, 1e-5) for s in range(total)]
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[warmup - 1] == pytest.approx(base) and lrs[warmup] == pytest.approx(base)
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert min(lrs[warmup:]) > 1e-5 - 1e-12


def test_random_up_sends_the_up_axis_to_every_axis_direction():
    """With random_up the object's up (y) lands on each of +-x, +-y, +-z about equally often;
    without it, up stays up. Lengths are kept: only rotations are drawn."""
    from training.augment import AXIS_ROTATIONS, Augment

    assert len(AXIS_ROTATIONS) == 24
    assert np.allclose([np.linalg.det(m) for m in AXIS_ROTATIONS], 1.0)
    marker = np.zeros((4, 6), np.float32)
    marker[:, 1] = 1.0  # four points straight up
    plain = dict(scale=(1.0, 1.0), jitter_sigma=0.0, max_dropout=0.0, rgb_dropout=0.0)
    landed = []
    for i in range(600):
        out = Augment(random_up=True, **plain)(marker, np.random.default_rng(i))[0, :3]
        assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-5)
        landed.append(tuple(np.round(out).astype(int)))
    counts = {d: landed.count(d) for d in set(landed)}
    assert len(counts) == 6 and min(counts.values()) > 60, counts
    kept = Augment(random_up=False, **plain)(marker, np.random.default_rng(0))[0, :3]
    assert np.allclose(kept, [0, 1, 0], atol=1e-6)


@pytest.mark.train
def test_grouped_batches_hold_one_group_each_and_mix_only_the_remainder(tmp_path):
    """pointbert-tiny, random init: 8-object batches over groups of 20, 13 and 7 objects."""
    groups = ["a"] * 20 + ["b"] * 13 + ["c"] * 7
    trainer = Trainer(make_features(n_objects=40), TrainConfig(epochs=1, **CONFIG), tmp_path, groups=groups)
    batches = trainer._batches(0)
    # a: 2 full batches, b: 1, leaving 4 + 5 + 7 = 16 objects for 2 mixed batches
    assert trainer.steps_per_epoch == len(batches) == 5
    kinds = sorted(len({groups[i] for i in b}) for b in batches)
    assert kinds[:3] == [1, 1, 1] and all(k > 1 for k in kinds[3:]), kinds
    flat = np.concatenate(batches)
    assert len(flat) == len(set(flat.tolist())) == 40, "every object once an epoch"
    assert [b.tolist() for b in trainer._batches(1)] != [b.tolist() for b in batches], "a new order each epoch"
    history = trainer.fit()
    assert np.isfinite(history[-1]["loss"])
