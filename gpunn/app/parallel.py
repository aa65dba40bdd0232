r"""One training step of ``gpunn train`` over micro-batches and ranks (``--micro-batches``, ``--distributed``, ``--zero``).

A batch of B samples is cut into M fixed micro-batches (:func:`gpunn.distributed.tree.micro_ranges`); rank r of N
computes micro-batches :math:`[r M / N, (r + 1) M / N)`. Each micro-batch's loss is a sum whose gradient is scaled
by :math:`1 / B` (``reduction="sum", grad=1/B``: the gradient of the batch mean, the same bits as
``reduction="mean"`` on a whole batch), so the batch gradient is the plain sum of the micro-batch gradients, taken
in the fixed tree order (:class:`gpunn.distributed.TreeSum` on the rank, then the ranks' sums by
``allreduce_sum`` or the ZeRO reduce-scatter). One process with M micro-batches and N ranks with the same M
therefore step with the same gradient bits: the runs are identical, whatever N (M / N must be a power of two).
Losses and outputs of every micro-batch are gathered to every rank in micro-batch order for the progress figures.
"""

from __future__ import annotations

import numpy as np

import gpunn
from gpunn import distributed as dist
from gpunn.distributed import tree

from .mlp import make_optimizer

OPTIMIZER_CLASSES = {"sgd": "SGD", "momentum": "Momentum", "nag": "NAG", "rmsprop": "RMSprop", "adam": "Adam",
                     "adamw": "AdamW"}


class World:
    """This process's rank and the number of ranks (one process, or the MPI job under ``--distributed``)."""

    def __init__(self, distributed: bool, timeout: float):
        self.timeout = timeout
        self.ch = dist.channel() if distributed else None
        self.rank, self.size = (self.ch.rank, self.ch.size) if self.ch else (0, 1)

    def allgather(self, obj):
        """Every rank's ``obj`` in rank order (``[obj]`` for one process)."""
        return self.ch.allgather_obj(obj, "gpunn train gather", self.timeout) if self.ch else [obj]

    @property
    def collective_seconds(self) -> float:
        return self.ch.seconds if self.ch else 0.0

    def use_local_gpu(self):
        """Ranks on one node take GPUs round-robin (untested here: no GPU)."""
        from numba import cuda

        local = self.ch.comm.Split_type(self.ch.MPI.COMM_TYPE_SHARED).Get_rank() if self.ch else 0
        device = local % len(cuda.gpus)
        cuda.select_device(device)
        try:
            import cupy

            cupy.cuda.Device(device).use()
        except ImportError:
            pass


def check_split(micro_batches: int, ranks: int):
    """ValueError unless ``micro_batches`` micro-batches split over ``ranks`` in the one-process order."""
    if not tree.keeps_order(micro_batches, ranks):
        raise ValueError(f"--micro-batches {micro_batches} cannot be split over {ranks} ranks in the one-process "
                         f"order: it must be the number of ranks times a power of two (e.g. {ranks} or {2 * ranks})")


class Stepper:
    """The model's optimizer (plain, or ZeRO-sharded) and the micro-batched gradient step."""

    def __init__(self, model, loss_fn, cfg, world: World):
        self.model, self.loss_fn, self.world = model, loss_fn, world
        self.micro = cfg.micro_batches or world.size
        if world.size > 1:
            check_split(self.micro, world.size)
        self.classification = cfg.task == "classification"
        if cfg.zero:
            cls = getattr(gpunn.optim, OPTIMIZER_CLASSES[cfg.optimizer])
            self.opt = dist.ShardedOptimizer(cls, model.flat, world.ch.comm if world.ch else None, average=False,
                                             timeout=world.timeout, lr=cfg.lr)
        else:
            self.opt = make_optimizer(cfg.optimizer, model.params, cfg.lr)
            if world.ch:
                dist.broadcast(model.flat, comm=world.ch.comm, timeout=world.timeout)   # + the start-up size check

    def step(self, x, y):
        """One optimizer step on the batch ``(x, y)`` (device arrays, the whole batch on every rank).

        Returns ``(losses, outputs)``: every micro-batch's summed loss (floats) and output (host arrays), in
        micro-batch order, gathered from every rank."""
        n = len(x)
        mine = tree.micro_ranges(n, self.micro)
        per = self.micro // self.world.size
        mine = mine[self.world.rank * per:(self.world.rank + 1) * per]
        grads, losses, outs = dist.TreeSum(), [], []
        for lo, hi in mine:
            out = self.model.forward(x[lo:hi])
            # the batch mean's divisor: rows for cross-entropy, elements for the regression losses
            per_sample = 1 if self.classification else int(np.prod(tuple(out.shape[1:])))
            loss, dout = self.loss_fn(out, y[lo:hi], reduction="sum", grad=1.0 / (n * per_sample))
            grads.add(self.model.backward(dout)[0])                 # into the model's one gradient buffer
            losses.append(float(np.asarray(self.model.backend.to_host(loss))))
            outs.append(np.asarray(self.model.backend.to_host(out)))
        flat_grad = grads.result(out=self.model.flat_grad)
        self._apply(flat_grad)
        gathered = self.world.allgather((losses, outs))
        return [v for ls, _ in gathered for v in ls], [o for _, os_ in gathered for o in os_]

    def _apply(self, flat_grad):
        if isinstance(self.opt, dist.ShardedOptimizer):
            self.opt.step(flat_grad)
            return
        if self.world.ch:
            dist.allreduce_sum(flat_grad, self.world.ch.comm, timeout=self.world.timeout)
        self.opt.step([flat_grad])

    def state_bytes_per_rank(self):
        return [int(b) for b in self.world.allgather(dist.state_bytes(self.opt))]
