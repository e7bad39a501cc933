"""Start a data-parallel training run with PyTorch's launcher (torchrun) and join its process group.

`clinfuse train` with `train.nproc: N > 1` runs torchrun's launcher in this process
(`torch.distributed.run`, the code behind the `torchrun` command), which starts N copies of
`python -m clinfuse.pipeline <the same arguments>` on this machine with a standalone rendezvous;
each copy sees torchrun's RANK / LOCAL_RANK / WORLD_SIZE and joins the process group.
Started by torchrun directly (`torchrun --nproc_per_node N -m clinfuse.pipeline train ...`, or with
`--nnodes/--node_rank/--rdzv_*` on several machines), it skips the launch and joins.

Backend: NCCL on CUDA (one GPU per process: cuda:LOCAL_RANK), gloo on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import torch

from clinfuse.etl.errors import ConfigError

EXIT_USER_ERROR = 2


def inside_torchrun() -> bool:
    """True in a process torchrun (or another launcher setting RANK and WORLD_SIZE) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def launched_world_size() -> int:
    """WORLD_SIZE the launcher set (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if inside_torchrun() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside a launcher)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if inside_torchrun() else 1


def torchrun_arguments(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line that runs `python -m clinfuse.pipeline <argv>` in `nproc` local processes."""
    return ["--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), "--module", "pipeline", *argv]


def relaunch_under_torchrun(nproc: int, argv: list[str]) -> int:
    """Run `clinfuse <argv>` in `nproc` processes on this machine; returns the exit code.

    Each process prints its own one-line error; when one fails, torchrun stops the others
    and this returns the first failure's exit code (2 for a configuration or input error).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    print(f"clinfuse: starting {nproc} processes with torchrun (train.nproc: {nproc})", file=sys.stderr, flush=True)
    args = get_args_parser().parse_args(torchrun_arguments(nproc, argv))
    # the ranks print their own errors and this prints the one-line outcome: not torchrun's
    # warnings about stopping the other ranks
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
        print(f"clinfuse: rank {rank} of {nproc} exited with code {failure.exitcode}; "
              "its message is above", file=sys.stderr)
        return code
    return 0


def process_device(setting: str) -> torch.device:
    """This process's device: cuda:LOCAL_RANK under a launcher on CUDA, else as resolved for one process."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but this PyTorch build sees no CUDA device "
                          f"(torch {torch.__version__}); use device: cpu or auto")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if inside_torchrun():
            index = local_rank()
            if index >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {index}: this machine has {torch.cuda.device_count()} CUDA devices; "
                                  "start at most one process per GPU (torchrun --nproc_per_node, train.nproc)")
            torch.cuda.set_device(index)
            return torch.device("cuda", index)
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(setting: str) -> Iterator[None]:
    """Join torchrun's process group for the duration (no-op for a single process).

    NCCL when this process trains on CUDA, gloo on CPU. Rendezvous comes from the
    environment torchrun sets (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE).
    """
    import torch.distributed as dist

    if launched_world_size() <= 1 or dist.is_initialized():
        yield
        return
    device = process_device(setting)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, **kwargs)
    try:
        yield
    finally:
        dist.destroy_process_group()


def threads_per_process(requested: int) -> int:
    """`train.num_threads`, lowered so that the processes on this machine share its cores.

    N processes with T threads each on C cores oversubscribe the CPU when N*T > C (every
    thread then waits on the others); each process gets at most C // N threads.
    """
    n = local_world_size()
    if n <= 1:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested, cores // n))
