"""Multi-process execution with accelerate (GPUs, or CPU processes for testing).

Launch any blockmask command with several processes, e.g.

    accelerate launch --num_processes 4 -m blockmask.cli eval mnist-ddpm --device auto ...   # 4 GPUs
    torchrun --nproc_per_node 2 -m blockmask.cli train config:… --device cpu ...             # CPU test

Sample generation splits its batches over processes (each batch keeps its own seed, so the images
are those of a single-process run); mask training splits its noise batch and sums the gradient of
the logits over processes, so every process learns the same rows. Single-process runs never touch
torch.distributed.
"""

from __future__ import annotations

import functools
import os
import platform

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@functools.lru_cache(maxsize=None)
def _state(cpu: bool):
    from accelerate import PartialState

    return PartialState(cpu=cpu)


def state(device: torch.device | None = None):
    """accelerate's PartialState when launched with several processes, else None."""
    if world_size() <= 1:
        return None
    return _state(device is None or torch.device(device).type == "cpu")


def is_main(device=None) -> bool:
    st = state(device)
    return st is None or st.is_main_process


def local_device(device: torch.device) -> torch.device:
    """cuda → cuda:LOCAL_RANK under a multi-process launch."""
    if device.type == "cuda" and world_size() > 1 and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(items: list, device=None) -> list:
    """This process's share of ``items`` (round-robin); all of them in a single process."""
    st = state(device)
    if st is None:
        return list(items)
    return list(items)[st.process_index::st.num_processes]


def gather(objs: list, device=None) -> list:
    """Concatenate every process's list (pickled by accelerate; results only, never files)."""
    st = state(device)
    if st is None:
        return objs
    from accelerate.utils import gather_object

    return gather_object(objs)


def all_reduce_sum(t: torch.Tensor, device=None) -> torch.Tensor:
    st = state(device)
    if st is None:
        return t
    t = t.contiguous()
    torch.distributed.all_reduce(t)
    return t


def batch_slice(batch: int, device=None) -> slice:
    """Contiguous slice of a batch for this process (training's noise batch)."""
    st = state(device)
    if st is None:
        return slice(0, batch)
    per = -(-batch // st.num_processes)
    start = st.process_index * per
    return slice(min(start, batch), min(start + per, batch))


def device_name(device: torch.device) -> str:
    """The card's name, or the CPU's with the thread count (what a timing names)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} × {torch.get_num_threads()} threads"
