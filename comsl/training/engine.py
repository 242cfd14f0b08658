"""Execution engines: plain PyTorch (one process, or DDP under ``torchrun``) and DeepSpeed ZeRO.

Both wrap the model together with the loss in :class:`LossModule`, so the loss function may call any
model method (``encode_speech``, ...) while DDP and DeepSpeed still see one ``forward`` per micro-batch
(DDP only synchronises gradients of work done inside its ``forward``).

The trainer drives a step as: ``forward`` each micro-batch -> agree on finiteness across ranks
(``any_rank``) -> ``backward`` -> ``step``; a non-finite micro-batch is abandoned with ``discard``
before any backward, so parameters and optimizer state stay untouched.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from comsl.config import OptimConfig, TrainConfig
from comsl.errors import CheckpointError, ConfigError
from comsl.training.checkpoint import load_torch_state
from comsl.training.master_weights import MasterWeights
from comsl.training.precision import DTYPES, autocast, resolve_precision

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]

DEEPSPEED_TAG = "deepspeed"
"""Sub-directory of a checkpoint holding DeepSpeed's own files."""

# Used when engine=deepspeed without a JSON file (train.zero_stage set).
DEFAULT_DEEPSPEED_CONFIG: dict[str, Any] = {
    "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True},
    "steps_per_print": 1 << 30,
    "wall_clock_breakdown": False,
}


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (``(0, 1, 0)`` when absent).

    Usable before any process group exists, e.g. to shard a sampler in ``build_task``.
    """
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_dist_env() -> None:
    """Fill the variables a process group needs so a lone process works without a launcher
    (DeepSpeed otherwise falls back to MPI discovery)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move every tensor in a (nested) batch to ``device``; cast floating tensors to ``float_dtype``."""
    if isinstance(batch, torch.Tensor):
        if float_dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=float_dtype, non_blocking=True)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, float_dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, float_dtype) for v in batch)
    return batch


class LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: the unit DDP / DeepSpeed wrap.

    ``loss_fn`` is kept out of the module tree so a frozen teacher it may hold is neither partitioned
    by ZeRO nor cast by DeepSpeed's mixed precision, nor checkpointed with the student.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        object.__setattr__(self, "_loss_fn", loss_fn)

    def forward(self, batch: dict):
        return self._loss_fn(self.model, batch)


def param_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Name -> full shape of every parameter and buffer (ZeRO-3 partitions report ``ds_shape``)."""
    out = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        shape = getattr(t, "ds_shape", None)
        out[name] = list(shape if shape is not None else t.shape)
    return out


class Engine:
    """Common interface of the engines; see the module docstring for the call order."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    rank: int = 0
    world_size: int = 1
    #: The precision the forward runs at (``train.precision`` resolved for the device): fp32, bf16 or fp16.
    precision: str = "fp32"
    #: True when a non-finite micro-batch after the first of a step can still be thrown away.
    can_discard_accumulated: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ---- collectives (no-ops in one process)
    def any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def autocast(self):
        """The autocast context of this engine's precision (training forwards and dev evaluation)."""
        return autocast(self.device, self.precision)

    @contextlib.contextmanager
    def gathered_params(self, fp32: bool = False):
        """Context in which the full weights are present on every rank (ZeRO-3 gathers them);
        ``fp32=True``: as float32 master weights (for exports), where the engine trains 16-bit copies."""
        yield

    # ---- to be provided by engines
    def prepare(self, batch: Any) -> Any: ...
    def forward(self, batch: Any, last_micro: bool): ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def discard(self) -> None: ...
    def step(self) -> bool: ...  # False: the update was skipped (non-finite gradient)
    def save(self, ckpt_dir: Path) -> None: ...
    def load(self, ckpt_dir: Path) -> None: ...
    def extra_state(self) -> dict: return {}
    def load_extra_state(self, state: dict) -> None: ...


class TorchEngine(Engine):
    """Single process, or DDP (gloo on CPU, NCCL on GPU) when launched with ``WORLD_SIZE > 1``.

    fp32 trains float32 weights. bf16 trains bf16 weights with float32 masters that AdamW updates
    (:class:`~comsl.training.master_weights.MasterWeights`; as DeepSpeed's bf16 mode does), the frozen
    teacher in bf16 too; the forward stays under autocast so softmax and losses run in float32. fp16
    keeps float32 weights under autocast with a ``GradScaler``.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, param_groups: list[dict], *,
                 optim: OptimConfig, train: TrainConfig):
        self.rank, self.world_size, local_rank = dist_info()
        self.device = _device(local_rank)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.model = model.to(self.device)
        if hasattr(loss_fn, "to"):
            loss_fn.to(self.device)
        self.grad_accum = train.grad_accum
        self.max_grad_norm = optim.max_grad_norm
        self.precision = resolve_precision(train.precision, self.device)
        self.masters: MasterWeights | None = None
        self.float_dtype: torch.dtype | None = None
        if self.precision == "bf16":
            # Before the DDP wrapper, which buckets gradients by the parameters' dtype and, at wrapping,
            # would give the other ranks only rank 0's bf16 copies: they take its float32 weights here.
            if self.distributed:
                for p in self.model.parameters():
                    dist.broadcast(p.data, src=0)
            self.float_dtype = torch.bfloat16
            self.masters = MasterWeights(self.model, param_groups, self.float_dtype)
            param_groups = self.masters.param_groups
            if hasattr(loss_fn, "to"):
                loss_fn.to(self.float_dtype)  # the frozen teacher: no master, nothing to update
        wrapper = LossModule(self.model, loss_fn)
        if self.distributed:
            # Multi-task parts may be skipped in a step (zero weight, frozen speech blocks). In bf16 the
            # all-reduce averages bf16 gradients (as DeepSpeed's bf16 mode does); they reach the float32
            # masters after it.
            self.module: nn.Module = nn.parallel.DistributedDataParallel(
                wrapper, find_unused_parameters=True,
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.module = wrapper
        # Fused: one kernel over all parameters instead of one launch per parameter and op (torch's CPU
        # default), ~8% of a paper-shape step in the profile (BENCHMARKS.md).
        self.optimizer = torch.optim.AdamW(param_groups, betas=tuple(optim.betas), eps=optim.eps,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self._sync_ctx: contextlib.ExitStack | None = None

    def prepare(self, batch):
        # bf16 weights: float inputs follow, as under DeepSpeed.
        return to_device(batch, self.device, self.float_dtype)

    def forward(self, batch, last_micro):
        self._sync_ctx = contextlib.ExitStack()
        if self.distributed and not last_micro:
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            self._sync_ctx.enter_context(self.module.no_sync())
        with self.autocast():
            return self.module(batch)

    def backward(self, loss):
        # Average over micro-batches so the step sees the mean gradient.
        self.scaler.scale(loss / self.grad_accum).backward()
        self._close_sync()
        if self.masters is not None and not self.distributed:
            # Accumulate in float32. Under DDP the bf16 gradients stay put until the step: the all-reduce
            # of the last micro-batch averages what no_sync accumulated in them.
            self.masters.collect_grads()

    def _close_sync(self):
        if self._sync_ctx is not None:
            self._sync_ctx.close()
            self._sync_ctx = None

    def discard(self):
        self._close_sync()
        self._zero_grad()

    def _zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)
        if self.masters is not None:
            self.model.zero_grad(set_to_none=True)  # bf16 gradients not collected yet (DDP)

    def step(self):
        # Frozen parts (training/freezing.py) arrive without gradient and with LR 0, as under DeepSpeed.
        # In bf16 the optimizer holds the float32 masters: clipping and the finiteness check see their
        # gradients.
        if self.masters is not None:
            self.masters.collect_grads()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None],
            self.max_grad_norm if self.max_grad_norm > 0 else float("inf"))
        # A finite loss can still give a NaN/inf gradient: skip the update on every rank, like a NaN loss.
        # (fp16 leaves overflow to the loss scaler, which skips the step and lowers the scale.)
        if self.precision != "fp16" and self.any_rank(not bool(torch.isfinite(norm))):
            self._zero_grad()
            return False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.masters is not None:
            self.masters.push()
        self._zero_grad()
        return True

    @contextlib.contextmanager
    def gathered_params(self, fp32=False):
        with self.masters.fp32_view() if fp32 and self.masters is not None else contextlib.nullcontext():
            yield

    def save(self, ckpt_dir):
        # Replicated state: rank 0 writes it. In bf16, model.safetensors holds the float32 masters.
        if self.is_main:
            from safetensors.torch import save_model
            with self.gathered_params(fp32=True):
                save_model(self.model, str(ckpt_dir / "model.safetensors"))
            torch.save(self.optimizer.state_dict(), ckpt_dir / "optimizer.pt")

    def load(self, ckpt_dir):
        from safetensors.torch import load_model
        path = ckpt_dir / "model.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{ckpt_dir}: no model.safetensors (written by another engine? "
                                  "resume with the engine that wrote it)")
        with self.gathered_params(fp32=True):  # in bf16: into the masters, then refresh the bf16 copies
            missing, unexpected = load_model(self.model, str(path), strict=False, device=str(self.device))
        if missing or unexpected:
            raise CheckpointError(f"{path}: missing keys {sorted(missing)}; unexpected keys {sorted(unexpected)}")
        if self.masters is not None:
            self.masters.push_all()
        state = load_torch_state(ckpt_dir / "optimizer.pt", map_location=self.device)
        self.optimizer.load_state_dict(state)

    def extra_state(self):
        return {"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}

    def load_extra_state(self, state):
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])


def deepspeed_config(train: TrainConfig, optim: OptimConfig, precision: str | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON of ``train.deepspeed_config`` with batch, accumulation, clipping, precision
    (``precision``, resolved for the device; default ``train.precision`` resolved for this process's
    device) and ZeRO stage filled in from our config (our collator builds whole batches, so DeepSpeed's
    micro-batch size is 1)."""
    if precision is None:
        precision = resolve_precision(train.precision, _device(dist_info()[2]))
    if train.deepspeed_config:
        path = Path(train.deepspeed_config)
        if not path.is_file():
            raise ConfigError(f"train.deepspeed_config: {path} not found")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON: {err}") from err
    else:
        cfg = copy.deepcopy(DEFAULT_DEEPSPEED_CONFIG)
    for key in ("train_batch_size", "optimizer", "scheduler"):
        if key in cfg:
            log.info("deepspeed config: ignoring %r (set by comsl)", key)
            cfg.pop(key)
    cfg["train_micro_batch_size_per_gpu"] = 1
    cfg["gradient_accumulation_steps"] = train.grad_accum
    cfg["gradient_clipping"] = optim.max_grad_norm
    cfg["bf16"] = {"enabled": precision == "bf16"}
    fp16 = dict(cfg.get("fp16", {}))
    fp16["enabled"] = precision == "fp16"
    cfg["fp16"] = fp16
    zero = dict(cfg.get("zero_optimization", {}))
    if train.zero_stage is not None:
        zero["stage"] = train.zero_stage
    cfg["zero_optimization"] = zero
    # torch.optim.AdamW as the client optimizer: no C++ build on first use.
    cfg["zero_allow_untested_optimizer"] = True
    cfg["zero_force_ds_cpu_optimizer"] = False
    cfg.setdefault("steps_per_print", 1 << 30)
    return cfg


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO 0-3 (optionally with offload), driven micro-batch by micro-batch.

    DeepSpeed keeps accumulated (partitioned) gradients inside its optimizer with no public way to
    drop them, so a non-finite micro-batch *after the first* of a step cannot cancel the step: it is
    replaced by a zero-weighted pass over the step's first micro-batch (keeping every rank's
    collectives and DeepSpeed's micro-step counter aligned) and the step applies the finite
    micro-batches. A non-finite first micro-batch (always the case with ``grad_accum=1``) skips the
    step entirely.
    """

    can_discard_accumulated = False

    def __init__(self, model: nn.Module, loss_fn: LossFn, param_groups: list[dict], *,
                 optim: OptimConfig, train: TrainConfig):
        ensure_dist_env()
        import deepspeed
        import deepspeed.ops

        # Skip the shared-memory comm op DeepSpeed would otherwise compile (~45 s) on first use.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        self.rank, self.world_size, local_rank = dist_info()
        self.device = _device(local_rank)
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo")
        self.precision = resolve_precision(train.precision, self.device)
        self.config = deepspeed_config(train, optim, self.precision)
        self.zero_stage = int(self.config["zero_optimization"].get("stage", 0))
        if hasattr(loss_fn, "to"):
            loss_fn.to(self.device)
        optimizer = torch.optim.AdamW(param_groups, betas=tuple(optim.betas), eps=optim.eps)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=LossModule(model, loss_fn), optimizer=optimizer, config=self.config)
        self.ds.checkpoint_engine = _weights_only_checkpoint_engine(self.ds)
        self.model = model
        self.device = self.ds.device if isinstance(self.ds.device, torch.device) else torch.device(self.ds.device)
        self.float_dtype = DTYPES.get(self.precision)
        if self.float_dtype is not None and hasattr(loss_fn, "to"):
            loss_fn.to(self.float_dtype)  # the frozen teacher, outside DeepSpeed's module: 16 bit like the student

    def prepare(self, batch):
        # DeepSpeed casts the module to 16 bit; float inputs must follow.
        return to_device(batch, self.device, self.float_dtype)

    def forward(self, batch, last_micro):
        # DeepSpeed has cast the student to 16 bit and __init__ the frozen teacher; autocast keeps its
        # float32 ops (softmax, losses) in float32.
        with self.autocast():
            return self.ds(batch)

    def backward(self, loss):
        self.ds.backward(loss)
        self.ds.step()  # an optimizer update only on the accumulation boundary

    def discard(self):
        pass

    def backward_zero(self, batch):
        """Stand-in for a dropped non-finite micro-batch after the first: zero gradient contribution."""
        total, _ = self.forward(batch, last_micro=True)
        self.ds.backward(total * 0.0)
        self.ds.step()

    def step(self):
        return True  # DeepSpeed stepped inside backward() on the boundary micro-batch

    @contextlib.contextmanager
    def gathered_params(self, fp32=False):
        with contextlib.ExitStack() as stack:
            if self.zero_stage == 3:
                import deepspeed
                stack.enter_context(deepspeed.zero.GatheredParameters(list(self.model.parameters()),
                                                                      modifier_rank=None))
            if fp32 and self.float_dtype is not None:
                stack.enter_context(self._master_weights())
            yield

    @contextlib.contextmanager
    def _master_weights(self):
        """Swap every 16-bit parameter's data for its full float32 master copy (a collective: every
        rank calls it), and back on exit; tensors without a master (frozen parameters, buffers) are
        upcast."""
        from deepspeed.utils import safe_get_full_fp32_param

        saved = []
        for p in self.model.parameters():
            master = safe_get_full_fp32_param(p)
            saved.append((p, p.data))
            p.data = (master if master is not None else p.data.float()).to(p.device)
        for b in self.model.buffers():
            if b.is_floating_point():
                saved.append((b, b.data))
                b.data = b.data.float()
        try:
            yield
        finally:
            for p, data in saved:
                p.data = data

    def save(self, ckpt_dir):
        # Every rank writes its own partitions.
        self.ds.save_checkpoint(str(ckpt_dir), tag=DEEPSPEED_TAG, client_state={}, save_latest=False)

    def load(self, ckpt_dir):
        if not (ckpt_dir / DEEPSPEED_TAG).is_dir():
            raise CheckpointError(f"{ckpt_dir}: no {DEEPSPEED_TAG}/ directory (written by the torch engine? "
                                  "resume with the engine that wrote it)")
        # ZeRO partitions the optimizer state (and at stage 3 the weights) by rank: one file per rank
        saved = len(list((ckpt_dir / DEEPSPEED_TAG).glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt")))
        if saved and saved != self.world_size:
            raise CheckpointError(
                f"{ckpt_dir}: written by {saved} ranks under ZeRO (optimizer state partitioned by rank), this "
                f"run has {self.world_size}; resume with {saved} processes (torchrun --nproc_per_node {saved} "
                f"-m comsl.cli train ..., or deepspeed --num_gpus {saved} ...)")
        path, _ = self.ds.load_checkpoint(str(ckpt_dir), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=False, load_module_strict=True)
        if path is None:
            raise CheckpointError(f"{ckpt_dir}: DeepSpeed could not load its checkpoint")


def _deepspeed_state_classes() -> list[type]:
    """DeepSpeed's own classes inside its ZeRO optimizer state files (every precision, stages 0-3)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _weights_only_checkpoint_engine(ds):
    """DeepSpeed's torch checkpoint engine, loading with ``weights_only=True`` instead of unpickling
    arbitrary objects (DeepSpeed 0.19 passes ``weights_only=False``: a planted file would run code).
    Only tensors, containers and :func:`_deepspeed_state_classes` are accepted."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if type(ds.checkpoint_engine) is not TorchCheckpointEngine:
        raise ConfigError(f"train.deepspeed_config: checkpoint engine {type(ds.checkpoint_engine).__name__} is "
                          "not supported (comsl loads DeepSpeed state only through the torch checkpoint engine); "
                          "remove the checkpoint writer/datastates settings")
    allowed = _deepspeed_state_classes()

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path, map_location=None):
            return load_torch_state(path, map_location=map_location, allowed=allowed)

    return WeightsOnlyCheckpointEngine(ds._config)


def build_engine(model: nn.Module, loss_fn: LossFn, param_groups: list[dict], *, optim: OptimConfig,
                 train: TrainConfig) -> Engine:
    """The engine named by ``train.engine``."""
    if train.engine == "deepspeed":
        return DeepSpeedEngine(model, loss_fn, param_groups, optim=optim, train=train)
    return TorchEngine(model, loss_fn, param_groups, optim=optim, train=train)
