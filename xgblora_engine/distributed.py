"""Data-parallel XGBLoRA over torch.distributed (gloo on CPU, NCCL on GPUs).

Every process holds the frozen model. The round's layers come from (seed, round), so all
ranks agree without talking; only the booster gradients cross, summed by one
all-reduce per optimizer step over a single flat buffer. Boosters are rank r on k
layers: for SmolLM2 at r = 1, k = 10 that is 10 × 9,984 fp32 values, 390 KiB a step.

Why not torch's DistributedDataParallel: its wrapper is built once around a fixed set of
trainable parameters, and here they change every round. Re-wrapping per round would
rebuild its buckets and re-broadcast parameters each time for no gain at this size; a
hand all-reduce of the flat gradient is one collective and nothing to rebuild.

Launch: ``xgblora train --num-processes N …`` (this machine), or any launcher that sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT — ``torchrun`` or
``accelerate launch -m xgblora_engine.cli train …`` for several nodes.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch

DEFAULT_TIMEOUT_S = 600


class SingleProcess:
    """The one-process case: every collective is the identity."""

    rank, world, is_main = 0, 1, True
    bytes_reduced = 0

    def sum_float(self, value: float) -> float:
        return value

    def sum_int(self, value: int) -> int:
        return value

    def any(self, flag: bool) -> bool:
        return flag

    def all_reduce_grads(self, params) -> None:
        return None

    def all_reduce_tensors(self, tensors) -> None:
        return None

    def check_same(self, value, what: str) -> None:
        return None

    def barrier(self) -> None:
        return None

    def broadcast(self, obj):
        return obj


class Distributed(SingleProcess):
    """A member of a torch.distributed process group."""

    def __init__(self, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        import torch.distributed as dist

        self.dist = dist
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            # A dead peer makes the others' collectives fail after this long instead of hanging.
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
        self.debug = os.environ.get("XGBLORA_DEBUG_DIST") == "1"

    def _reduce(self, values: list[float], dtype=torch.float64) -> list[float]:
        t = torch.tensor(values, dtype=dtype, device=self.device)
        self.dist.all_reduce(t)
        return t.tolist()

    def sum_float(self, value: float) -> float:
        return self._reduce([value])[0]

    def sum_int(self, value: int) -> int:
        return int(self._reduce([value], torch.int64)[0])

    def any(self, flag: bool) -> bool:
        return self._reduce([1.0 if flag else 0.0])[0] > 0

    def all_reduce_grads(self, params) -> None:
        self.all_reduce_tensors([p.grad for p in params])

    def all_reduce_tensors(self, tensors) -> None:
        """Sum every tensor across ranks in place, with one collective."""
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.dist.all_reduce(flat)
        self.bytes_reduced = flat.numel() * flat.element_size()
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def check_same(self, value, what: str) -> None:
        """Debug mode: assert every rank computed the same ``value`` (e.g. the layer draw)."""
        if not self.debug:
            return
        gathered = [None] * self.world
        self.dist.all_gather_object(gathered, value)
        if any(v != gathered[0] for v in gathered):
            raise RuntimeError(f"ranks disagree on {what}: {gathered}")

    def barrier(self) -> None:
        self.dist.barrier()

    def broadcast(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def launched_distributed() -> bool:
    """True inside a process started by torchrun / accelerate launch with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class RankSlice:
    """Rank r's share of each global batch: the same examples, in the same order, as one
    process with the whole batch would see, split into equal contiguous slices."""

    def __init__(self, stream, rank: int, world: int) -> None:
        self.stream, self.rank, self.world = stream, rank, world

    def next_batch(self):
        batch = self.stream.next_batch()
        per_rank = batch["input_ids"].shape[0] // self.world
        rows = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        return {k: v[rows] for k, v in batch.items()}

    def state(self):
        return self.stream.state()

    def load_state(self, state) -> None:
        self.stream.load_state(state)

    def longest_batch(self):
        return self.stream.longest_batch()


def launch(argv: list[str], num_processes: int) -> int:
    """Re-run this command under torch.distributed.run with ``num_processes`` local ranks."""
    import socket
    import subprocess

    with socket.socket() as s:  # a free port for the rendezvous, on loopback only
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={num_processes}",
           "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "xgblora_engine.cli", *argv]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes))))
    code = subprocess.call(cmd, env=env)
    if code == 0:
        return 0
    if code != 2:  # 2: a user error, already said by the rank that met it
        print(f"error: a training process of the {num_processes} failed (exit code {code}); the others were stopped\n"
              f"hint: the run's last checkpoint is intact: `xgblora resume RUN_DIR --num-processes {num_processes}`",
              file=sys.stderr)
    return code
