"""Multi-GPU training: torchrun processes, FSDP2 sharding and sharded checkpoints.

One process per GPU, started by ``torchrun`` (``torch.distributed.run``) as SageMaker's
``torch_distributed`` distribution starts a script; each decoder layer is an FSDP unit, so a
GPU holds 1/N of the weights plus one layer gathered at a time. Checkpoints go through
``torch.distributed.checkpoint``: each rank writes its shard of the trainable weights and
optimizer state, and a restarted job on the same instance type reads them back.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = [
    "DistributedContext",
    "all_reduce_sum",
    "barrier",
    "device_mesh",
    "gather_trainable_state",
    "in_turn",
    "launch_per_gpu",
    "load_sharded_checkpoint",
    "save_sharded_checkpoint",
    "setup",
    "shard_model",
    "teardown",
]

CHECKPOINT_META = "customize-checkpoint-meta.pt"
T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def sharded(self) -> bool:
        """True when several processes share the model (FSDP)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes the outputs."""
        return self.rank == 0


def launch_per_gpu(
    argv: Sequence[str], gpu_count: int, worker: Sequence[str] = ("-m", "customize.train")
) -> int:
    """Run ``python -m customize.train ARGV`` once per GPU under torchrun; return its exit code.

    Parameters
    ----------
    argv
        The command line of this process, to repeat in each worker.
    gpu_count
        Processes to start (one per GPU of the instance).
    worker
        What each worker runs before ``argv`` (torchrun's script or ``-m module`` words).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpu_count}",
        *worker,
        *argv,
    ]
    print(f"launching {gpu_count} workers: {' '.join(command)}", flush=True)
    return subprocess.call(command)


def setup(device_name: str) -> DistributedContext:
    """Join the process group torchrun set up (if any) and pick this process's device.

    Parameters
    ----------
    device_name
        ``auto``, ``cpu`` or ``cuda`` (the ``device`` hyperparameter).

    Returns
    -------
    DistributedContext
        World size 1 when not started by torchrun.
    """
    import torch

    if device_name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no CUDA device")
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not use_cuda:
        device = torch.device("cpu")
    elif world_size > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cuda")
    if world_size > 1 and not torch.distributed.is_initialized():
        # Ranks wait at barriers while the others load the base in turn (minutes each for
        # 41 GB): far longer than a collective's default 10-minute timeout.
        torch.distributed.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            device_id=device if use_cuda else None,
            timeout=datetime.timedelta(hours=2),
        )
    return DistributedContext(rank, world_size, local_rank, device)


def teardown(context: DistributedContext) -> None:
    """Leave the process group."""
    import torch

    if context.sharded and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op alone)."""
    import torch

    if context.sharded:
        torch.distributed.barrier()


def all_reduce_sum(values: Sequence[float], context: DistributedContext) -> list[float]:
    """Sum a few numbers over all processes (returned unchanged alone)."""
    import torch

    if not context.sharded:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=context.device)
    torch.distributed.all_reduce(tensor)
    return [float(value) for value in tensor.tolist()]


def _layer_class_names(model: Any) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = getattr(base, "_no_split_modules", None) or []
    if not names:
        raise ValueError(f"{type(base).__name__}: no _no_split_modules to shard by layer")
    return set(names)


def in_turn(context: DistributedContext, build: Callable[[], T]) -> T:
    """Run ``build`` on one process after another, so that host memory holds one model copy.

    Each rank loads the full base model on the CPU and moves only its shard to its GPU; in
    turn, the host needs the weights once (41 GB for 20.6 B in bf16), not once per GPU.
    """
    result: T | None = None
    for turn in range(context.world_size):
        if turn == context.rank:
            result = build()
        barrier(context)
    assert result is not None
    return result


def device_mesh(context: DistributedContext) -> Any:
    """The 1-D mesh of all processes that FSDP shards over (collective: every rank calls it)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(context.device.type, (context.world_size,))


def shard_model(model: Any, mesh: Any, compute_dtype: torch.dtype) -> Any:
    """Shard ``model`` over the processes with FSDP2, one unit per decoder layer.

    Parameters
    ----------
    model
        The (PEFT-wrapped) model, on the CPU or already on this process's GPU; FSDP moves
        each layer's shard to the device.
    mesh
        From :func:`device_mesh`.
    compute_dtype
        Dtype parameters are gathered and computed in: bfloat16 when the base is held in
        bfloat16 (float32 LoRA weights are cast for compute; gradients reduce in float32).
    """
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    layer_names = _layer_class_names(model)
    for module in model.modules():
        if type(module).__name__ in layer_names:
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _options(*, full: bool, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(
        full_state_dict=full, cpu_offload=full, ignore_frozen_params=True, strict=strict
    )


def gather_trainable_state(model: Any) -> dict[str, Any]:
    """Full trainable weights (LoRA adapters, or all weights), on rank 0's CPU; collective.

    Returns
    -------
    dict
        Parameter name to tensor on rank 0; empty on the other ranks.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return dict(get_model_state_dict(model, options=_options(full=True)))


def save_sharded_checkpoint(
    folder: Path,
    step: int,
    model: Any,
    optimizer: Any,
    meta: dict[str, Any],
    context: DistributedContext,
) -> None:
    """Write this step's checkpoint: every rank its shard, rank 0 the loop state; collective.

    The loop state (``meta``) names the step folder and is replaced last, so a job
    interrupted mid-write resumes from the previous complete checkpoint.
    """
    import torch
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict_saver import save

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options(full=False))
    target = folder / f"step-{step:08d}"
    save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(target))
    barrier(context)
    if context.is_main:
        partial = folder / (CHECKPOINT_META + ".partial")
        torch.save({**meta, "step": step, "folder": target.name}, partial)
        os.replace(partial, folder / CHECKPOINT_META)
        for old in folder.glob("step-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)
    barrier(context)


def load_sharded_checkpoint(folder: Path, model: Any, optimizer: Any) -> dict[str, Any] | None:
    """Restore the trainable weights and optimizer state; return the loop state, or None."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    meta_file = folder / CHECKPOINT_META
    if not meta_file.is_file():
        return None
    meta: dict[str, Any] = torch.load(meta_file, weights_only=False)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options(full=False))
    state: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
    load(state, checkpoint_id=str(folder / meta["folder"]))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
        # The frozen base weights come from the base model, not from the checkpoint.
        options=_options(full=False, strict=False),
    )
    return meta
