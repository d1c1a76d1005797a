"""Realistic runs for the browser tests and their screenshots, logged through the SDK."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import runstream
from runstream.sdk import Run

EXPERIMENT = "mnist-resnet"
SWEEP_EXPERIMENT = "cifar10-sweep"
CLUSTER = "gpu-cluster"
SMALL_CLUSTER = "cpu-pool"

# name -> (learning rate, batch size, arch, how low its loss gets)
CONFIGS = {
    "resnet18 lr=0.1": (0.1, 128, "resnet18", 0.081),
    "resnet18 lr=0.03": (0.03, 128, "resnet18", 0.064),
    "resnet34 lr=0.03": (0.03, 256, "resnet34", 0.052),
    "resnet34 lr=0.01": (0.01, 256, "resnet34", 0.097),
    "resnet50 lr=0.3": (0.3, 512, "resnet50", 0.143),
}


def curve(rng: random.Random, steps: int, start: float, floor: float, noise: float) -> list[float]:
    """A training-loss-like curve: exponential decay towards ``floor`` with noise."""
    out = []
    for step in range(steps):
        base = floor + (start - floor) * math.exp(-step / (steps / 5))
        out.append(max(floor * 0.9, base * (1 + rng.gauss(0, noise))))
    return out


@dataclass
class SeededExperiment:
    name: str
    runs: dict[str, str] = field(default_factory=dict)
    """run name -> run id"""
    min_loss: dict[str, float] = field(default_factory=dict)
    """run name -> min(loss) as logged"""
    handles: list[Run] = field(default_factory=list)


def log_training(run: Run, rng: random.Random, steps: int, floor: float, lr: float) -> float:
    losses = curve(rng, steps, 2.3, floor, 0.04)
    for step, loss in enumerate(losses):
        run.log("loss", loss, step=step)
        run.log("accuracy", min(0.995, 1.0 - loss / 2.4 + rng.gauss(0, 0.004)), step=step)
        if step % 10 == 0:
            run.log("learning_rate", lr * 0.5 * (1 + math.cos(math.pi * step / steps)), step=step)
    run.log("val_loss", losses[-1] * 1.12, step=steps - 1)
    return min(losses)


def seed_experiment(name: str = EXPERIMENT, steps: int = 300) -> SeededExperiment:
    """Five finished runs of one experiment with loss, accuracy, learning rate, tags and properties."""
    rng = random.Random(7)
    seeded = SeededExperiment(name)
    for i, (run_name, (lr, batch, arch, floor)) in enumerate(CONFIGS.items()):
        run = runstream.start_run(
            name,
            name=run_name,
            compute=CLUSTER,
            tags={"arch": arch, "team": "vision", "optimizer": "sgd" if i % 2 else "adamw"},
            capture_output=False,
            snapshot=False,
        )
        run.set_properties(lr=lr, batch_size=batch, epochs=20, dataset="mnist")
        seeded.runs[run_name] = run.run_id
        seeded.handles.append(run)
        seeded.min_loss[run_name] = log_training(run, rng, steps, floor, lr)
        if i == 4:
            run.fail("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
        else:
            run.complete()
    runstream.flush()
    return seeded


@dataclass
class Cluster:
    """Runs left queued or running on the compute targets, finished by ``finish``."""

    open_runs: list[Run] = field(default_factory=list)

    def finish(self) -> None:
        for run in reversed(self.open_runs):
            if run.status in ("created", "queued"):
                run.start()
            if run.status == "running":
                run.complete()
        runstream.flush()


def seed_cluster() -> Cluster:
    """A sweep with child trials running on the GPU cluster, more runs queued, one on a CPU pool."""
    rng = random.Random(11)
    cluster = Cluster()
    sweep = runstream.start_run(
        SWEEP_EXPERIMENT,
        name="lr sweep",
        compute=CLUSTER,
        tags={"kind": "sweep"},
        capture_output=False,
        snapshot=False,
    )
    cluster.open_runs.append(sweep)
    for lr in (0.1, 0.03, 0.01):
        trial = sweep.child(f"trial lr={lr}")
        trial.set_properties(lr=lr)
        for step, loss in enumerate(curve(rng, 120, 2.3, 0.3 + lr, 0.05)):
            trial.log("loss", loss, step=step)
        cluster.open_runs.append(trial)
    running = runstream.start_run(
        EXPERIMENT,
        name="resnet101 long",
        compute=CLUSTER,
        tags={"arch": "resnet101"},
        capture_output=False,
        snapshot=False,
    )
    running.log("loss", 1.7)
    cluster.open_runs.append(running)
    for name in ("vit-b16 warmup", "resnet152 baseline"):
        queued = runstream.start_run(
            EXPERIMENT, name=name, compute=CLUSTER, queued=True, capture_output=False, snapshot=False
        )
        cluster.open_runs.append(queued)
    cpu = runstream.start_run(
        "tokenizer-eval", name="bpe 32k", compute=SMALL_CLUSTER, capture_output=False, snapshot=False
    )
    cpu.log("throughput", 1840.0)
    cluster.open_runs.append(cpu)
    runstream.flush()
    return cluster


def log_values(run: Run) -> None:
    """A list, rows and a table, as the README's example logs them."""
    run.log_list("fibonacci", [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
    for i in range(40):
        angle = i * math.pi / 20
        run.log_row("cosine wave", angle=angle, cos=math.cos(angle))
    angles = [i * 2 * math.pi / 100 for i in range(101)]
    run.log_table(
        "sine wave",
        {"angle": angles, "sine": [math.sin(a) for a in angles], "cosine": [math.cos(a) for a in angles]},
    )
