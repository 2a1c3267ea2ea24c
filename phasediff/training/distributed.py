"""How the trainer runs the network: several processes (DDP under ``torchrun``), mixed
precision, channels-last and ``torch.compile`` (docs/design.md §5; docs/images.md).

**Multi-process design: one global stream, sharded.** Every rank holds the whole dataset and
the same batch generator (seeded identically, checkpointed once). At each step every rank
draws the *global* batch from it — data indices, flips, times t and kernel noise ε, exactly
the draws of a single-process run with the same ``train.batch_size`` — and runs the network
only on its contiguous shard of rows [r·B/W, (r+1)·B/W). Its loss is the shard's sum of
per-example losses times W/B, so after DDP averages the gradients over the W ranks every rank
holds (1/B)·Σ_all ∇ℓ_i, the single-process gradient, up to the order of float additions. The
logged loss is the all-reduced mean; gradient clipping, the non-finite guard, AdamW and the
EMA then see identical numbers on every rank, so all ranks stay in lock-step and the run
matches the single-process one (tested: tests/test_ddp.py). Noising the global batch costs
O(B·k·d) element-wise work per rank, negligible next to the network. Only rank 0 writes
checkpoints, metrics.csv, TensorBoard logs and sample images; every rank reads the same
checkpoint on ``--resume``. torch's global RNG (dropout) is seeded per rank with
seed + 1 000 003·rank + step, so dropout masks differ between ranks and a run with dropout
matches the single-process run only in distribution.

**Precision.** ``train.amp = "bf16"`` autocasts the network's forward pass to bfloat16 (CPU or
CUDA); ``"fp16"`` autocasts to float16 and scales the loss with ``torch.amp.GradScaler``
(CUDA only: on the CPU it is an error, not a silent fallback). The objective's own
arithmetic (kernel matrices, noising, residuals) stays in float32/float64 in every mode: only
the network runs in low precision and its output is cast back to float32. With fp16, a step
whose unscaled gradients overflow is skipped by the scaler (which lowers its scale) and is
not counted as a non-finite batch; the scaler state is checkpointed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "DistContext",
    "Execution",
    "ShardedModel",
    "setup_distributed",
    "teardown_distributed",
]

RANK_SEED_STRIDE = 1_000_003


@dataclass
class DistContext:
    """This process's place in a multi-process run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def seed_local_rng(self, seed: int, step: int) -> None:
        """Per-rank seed of torch's global RNG (dropout) in a multi-process run."""
        if self.active:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank + step)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer.") from None


def setup_distributed(device_name: str) -> DistContext:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1 in the environment):
    gloo on the CPU, nccl with one GPU per process (cuda:LOCAL_RANK). Without torchrun this
    is a no-op returning rank 0 of 1."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise ValueError(
            f"train.device {device_name!r} is not a device; use 'cpu' or 'cuda'."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() <= local:
            raise ValueError(
                f"process {rank} of {world} needs GPU cuda:{local}, but only "
                f"{torch.cuda.device_count()} CUDA devices are visible; start at most that many "
                f"processes per node or use train.device = 'cpu' (gloo)."
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"multi-process training runs on 'cpu' or 'cuda', not {device_name!r}.")
    owns = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistContext(rank=rank, world=world, local_rank=local, device=device, owns_group=owns)


def teardown_distributed(ctx: DistContext) -> None:
    """Leave the process group if ``setup_distributed`` created it."""
    if ctx.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        ctx.owns_group = False


def shard_bounds(batch: int, ctx: DistContext) -> tuple[int, int]:
    """Rows [lo, hi) of the global batch that this rank runs (sizes differ by at most one)."""
    return ctx.rank * batch // ctx.world, (ctx.rank + 1) * batch // ctx.world


class ShardedModel(nn.Module):
    """The model contract around the training network: evaluates ``network`` on this rank's
    rows of the global batch (zeros elsewhere; they carry no gradient and are never used) in
    autocast when mixed precision is on, and returns float32 of the input's dtype."""

    def __init__(
        self,
        network: nn.Module,
        parameterization: str,
        ctx: DistContext,
        amp_dtype: torch.dtype | None,
        device_type: str,
    ) -> None:
        super().__init__()
        self.network = network
        self.parameterization = parameterization
        self.ctx = ctx
        self.amp_dtype = amp_dtype
        self.device_type = device_type

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo, hi = shard_bounds(z.shape[0], self.ctx) if self.ctx.active else (0, z.shape[0])
        t_shard = t[lo:hi] if isinstance(t, torch.Tensor) and t.ndim == 1 else t
        if self.amp_dtype is None:
            out = self.network(z[lo:hi], t_shard)
        else:
            with torch.autocast(self.device_type, dtype=self.amp_dtype):
                out = self.network(z[lo:hi], t_shard)
        out = out.to(z.dtype)
        if (lo, hi) == (0, z.shape[0]):
            return out
        before = out.new_zeros((lo, *out.shape[1:]))
        after = out.new_zeros((z.shape[0] - hi, *out.shape[1:]))
        return torch.cat((before, out, after))


class Execution:
    """DDP, autocast, channels-last, torch.compile and the fp16 GradScaler for one model.

    ``loss(objective, …)`` returns (tensor to backpropagate, float loss of the global batch);
    ``backward``, ``unscale``, ``step`` and ``overflow`` replace ``loss.backward()`` and
    ``optimizer.step()`` so that fp16 loss scaling is applied when it is on."""

    def __init__(self, model: nn.Module, train_config, device: torch.device, ctx: DistContext):
        amp = train_config.amp
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(
                "train.amp = 'fp16' needs a CUDA device (float16 autocast with a GradScaler); "
                "use 'bf16' or 'off' on the CPU."
            )
        if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                "train.amp = 'bf16' needs a GPU with bfloat16 support (Ampere or newer); use "
                "'fp16' or 'off' on this GPU."
            )
        if ctx.active and train_config.batch_size < ctx.world:
            raise ValueError(
                f"train.batch_size ({train_config.batch_size}) must be at least the number of "
                f"processes ({ctx.world}), so that every process gets examples."
            )
        self.ctx = ctx
        self.amp = amp
        if train_config.channels_last:
            model.to(memory_format=torch.channels_last)
        network: nn.Module = model
        if ctx.active:
            ids = [device.index] if device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if train_config.compile:
            network = torch.compile(network)
        self.network = network
        dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        kind = getattr(model, "parameterization", "eps")
        self.model = ShardedModel(network, kind, ctx, dtype, device.type)
        self.model.prediction = getattr(model, "prediction", None)  # x̂₀ velocity models
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def loss(self, objective, process, x0: torch.Tensor, generator, weighting: str):
        """Objective on the global batch x0; see the module docstring for the sharding."""
        if not self.ctx.active:
            loss = objective(self.model, process, x0, generator, weighting=weighting)
            return loss, float(loss.detach())
        per = objective(self.model, process, x0, generator, weighting=weighting, reduce=False)
        batch = x0.shape[0]
        lo, hi = shard_bounds(batch, self.ctx)
        local = per[lo:hi].sum() * (self.ctx.world / batch)
        total = per[lo:hi].detach().sum().to(torch.float64).reshape(1)
        torch.distributed.all_reduce(total)
        return local, float(total) / batch

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the fp16 loss scale (before clipping and checks)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def overflow(self, optimizer: torch.optim.Optimizer) -> bool:
        """For fp16: the gradients overflowed at the current loss scale; let the scaler skip
        the update and lower its scale, and return True. False without a scaler."""
        if self.scaler is None:
            return False
        self.scaler.step(optimizer)  # skipped: unscale_ recorded the inf
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return True

    def state(self) -> dict:
        """JSON-friendly state to checkpoint (the GradScaler's)."""
        return {} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}

    def load_state(self, meta: dict) -> None:
        if self.scaler is not None and isinstance(meta.get("grad_scaler"), dict):
            self.scaler.load_state_dict(meta["grad_scaler"])
