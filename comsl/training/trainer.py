"""The training loop: schedule, freezing, non-finite skipping, logging, evaluation, checkpoints, resume.

A small loop of our own around ``deepspeed.initialize`` / DDP rather than transformers' Trainer or
accelerate: neither gives exact mid-epoch resume of a custom length-bucketed batch sampler, the
all-rank non-finite skip decided *before* backward, per-part freezing by LR factor, or our
checkpoint layout (safetensors + ``weights_only`` state + completion marker + retention by BLEU).

One optimizer step = ``train.grad_accum`` micro-batches. Step ``s`` (0-based) uses the LR of
update ``s``; records and checkpoints are labelled with the number of completed updates.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

from comsl import run_layout as layout
from comsl.config import OptimConfig, TrainConfig
from comsl.data.batching import padding_counts
from comsl.errors import CheckpointError, ComSLError, DataError
from comsl.parts import SPEECH
from comsl.training import checkpoint as ckpt
from comsl.training.engine import Engine, build_engine, param_shapes
from comsl.training.freezing import FreezePolicy, part_of
from comsl.training.logging import MetricsLogger, plot_loss_curve, progress_bar
from comsl.training.run_lock import RunDirLockedError, RunLock
from comsl.training.schedule import PolynomialDecaySchedule, main_lr, param_groups
from comsl.training.task import TrainTask

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a ``fit`` call did."""

    step: int
    """Completed optimizer steps after this call."""

    finished: bool
    """True when ``max_steps`` was reached (``final/`` exported)."""

    resumed_from: int | None
    """Step of the checkpoint this call resumed from (None = fresh start)."""

    nonfinite_skipped: int
    """Steps skipped for a non-finite loss over the whole run."""

    best_bleu: float | None
    """Best dev BLEU average seen (None = never evaluated)."""


class _Window:
    """Losses of the finite steps since the last log record, and the utterances seen."""

    def __init__(self):
        self.losses: dict[str, list] = {}  # loss name -> [sum over finite steps, count]
        self.steps = 0
        self.utts = 0
        self.start = time.perf_counter()

    def add(self, losses: dict[str, float]) -> None:
        self.steps += 1
        for k, v in losses.items():
            acc = self.losses.setdefault(k, [0.0, 0])
            acc[0] += v
            acc[1] += 1


def _unused_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2`` ... whichever does not exist yet."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


class _Fetch:
    """DataLoader item -> batch: look the indices up and collate (picklable for worker processes)."""

    def __init__(self, dataset, collate_fn):
        self.dataset = dataset
        self.collate_fn = collate_fn

    def __call__(self, indices):
        return len(indices), self.collate_fn([self.dataset[i] for i in indices])


def _epoch_index_lists(sampler, epoch: int, skip: int, what: str) -> list:
    """This rank's index lists of ``epoch`` after the first ``skip`` (already consumed); the order depends
    only on (seed, epoch). Raises DataError when the sampler gives this rank no batch at all."""
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    index_lists = list(iter(sampler))
    if not index_lists:
        raise DataError(f"the {what} sampler produced no batch for this rank "
                        "(empty manifest, or every utterance filtered out?)")
    return index_lists[skip:]


def _add_padding(window: dict[str, list], batches: list[Any]) -> None:
    """Padded and real frame/token counts into the log window, logged as ``pad_ratio/*`` = padded / real."""
    for batch in batches:
        for name, (padded, real) in padding_counts(batch).items():
            acc = window.setdefault(f"pad_ratio/{name}", [0, 0])
            acc[0] += padded
            acc[1] += real


class Trainer:
    """Train ``task`` under ``train``/``optim``; ``fit()`` starts or resumes ``<train.out_dir>``.

    ``run_config`` is the resolved experiment config (saved as ``config.yaml``, compared on resume);
    ``num_workers`` > 0 loads batches in worker processes.
    """

    def __init__(self, task: TrainTask, train: TrainConfig, optim: OptimConfig, *,
                 run_config: dict | None = None, num_workers: int = 0):
        self.task = task
        self.train = train
        self.optim = optim
        self.run_config = run_config or {"train": dataclasses.asdict(train), "optim": dataclasses.asdict(optim)}
        self.num_workers = num_workers
        self.out_dir = Path(train.out_dir)
        self.ckpt_root = self.out_dir / layout.CHECKPOINTS
        # Position in the run; all restored on resume.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.mt_epoch = 0  # position of the extra MT text stream (task.mt_text)
        self.mt_batch_in_epoch = 0
        self.nonfinite_consecutive = 0
        self.nonfinite_total = 0
        self.empty_batches = 0
        self.best: list[dict[str, float]] = []
        self.last_dev: float | None = None
        self.engine: Engine | None = None

    # ------------------------------------------------------------------ setup

    def _setup(self) -> None:
        model = self.task.model
        self.freeze = FreezePolicy.from_config(self.train, model)
        self.freeze.apply_static(model)
        groups = param_groups(model, self.optim)
        self._has_speech = any(part_of(model, n) == SPEECH for n, _ in model.named_parameters())
        self.engine = build_engine(model, self.task.loss_fn, groups, optim=self.optim, train=self.train)
        self.schedule = PolynomialDecaySchedule(
            self.engine.optimizer, warmup_steps=self.optim.warmup_steps,
            max_steps=self.train.max_steps, power=self.optim.power, end_lr=self.optim.end_lr,
            frozen=self.freeze.frozen)
        self._speech_frozen: bool | None = None

    def _set_speech_frozen(self, frozen: bool) -> None:
        """Tell the model (it may run the speech blocks without grad) when the state changes."""
        if frozen == self._speech_frozen:
            return
        self._speech_frozen = frozen
        if hasattr(self.task.model, "set_speech_frozen"):
            self.task.model.set_speech_frozen(frozen)
        if self.engine.is_main and self._has_speech:
            log.info("step %d: speech encoder %s", self.step, "frozen" if frozen else "unfrozen")

    # ------------------------------------------------------------------ data

    def _batches(self) -> Iterator[tuple[int, Any]]:
        """Endless ``(n_utterances, batch)``; the order depends only on (seed, epoch) and position.

        The position is ours: ``set_epoch`` then skip the batches already consumed (the sampler's own
        ``load_state_dict`` is never called, so prefetching workers cannot make it run ahead).
        """
        fetch = _Fetch(self.task.dataset, self.task.collate_fn)
        text = self._text_batches() if self.task.mt_text is not None else None
        while True:
            remaining = _epoch_index_lists(self.task.sampler, self.epoch, self.batch_in_epoch, "training")
            if self.num_workers > 0:
                # Own generator: creating workers must not draw from the global RNG (exact resume).
                loader = torch.utils.data.DataLoader(
                    remaining, batch_size=None, collate_fn=fetch, num_workers=self.num_workers,
                    generator=torch.Generator().manual_seed(ckpt.epoch_seed(self.train.seed, self.epoch)))
                items: Any = iter(loader)
            else:
                items = map(fetch, remaining)
            for n, batch in items:
                self.batch_in_epoch += 1
                if batch is None:
                    # Every utterance of the batch failed to decode (the dataset counts and limits those).
                    self.empty_batches += 1
                    log.warning("epoch %d batch %d: no decodable utterance, skipped", self.epoch, self.batch_in_epoch)
                    continue
                if text is not None:
                    batch["mt_extra"] = next(text)
                yield n, batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def _text_batches(self) -> Iterator[Any]:
        """Endless batches of the extra MT text (``task.mt_text``), in-process (text collation is cheap);
        its own epochs and position, saved with the trainer state."""
        extra = self.task.mt_text
        while True:
            for indices in _epoch_index_lists(extra.sampler, self.mt_epoch, self.mt_batch_in_epoch, "MT text"):
                self.mt_batch_in_epoch += 1
                yield extra.collate_fn([extra.dataset[i] for i in indices])
            self.mt_epoch += 1
            self.mt_batch_in_epoch = 0

    # ------------------------------------------------------------------ checkpoints

    def _trainer_state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "mt_epoch": self.mt_epoch, "mt_batch_in_epoch": self.mt_batch_in_epoch,
            "nonfinite_consecutive": self.nonfinite_consecutive, "nonfinite_total": self.nonfinite_total,
            "best": self.best, "dev_bleu_avg": self.last_dev, "world_size": self.engine.world_size,
            "engine": self.train.engine, "stage": self.train.stage,
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_<step>`` atomically (every rank takes part); apply retention."""
        e = self.engine
        self._check_finite_weights("checkpoint")
        final = layout.step_dir(self.ckpt_root, self.step)
        tmp = final.with_name(final.name + layout.TMP_SUFFIX)
        if e.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        e.barrier()
        e.save(tmp)
        rank_state = {"rng": ckpt.rng_state(), **e.extra_state()}
        torch.save(rank_state, tmp / f"rank_{e.rank}.pt")
        if e.is_main:
            ckpt.write_common_files(tmp, trainer_state=self._trainer_state(),
                                    structure=param_shapes(self.task.model), run_config=self.run_config)
            if self.train.checkpoint_export:
                with e.gathered_params(fp32=True):
                    ckpt.export_model(self.task.model, tmp / "model", self.task.tokenizer)
        elif self.train.checkpoint_export:
            with e.gathered_params(fp32=True):
                pass
        e.barrier()
        if e.is_main:
            ckpt.finalize(tmp, final)
            for d in ckpt.retain(self.ckpt_root, self.train.keep_last, self.train.keep_best):
                log.info("retention: removed %s", d)
        e.barrier()
        return final

    def _resume(self) -> int | None:
        """Load the newest complete checkpoint that verifies; returns its step (None when starting fresh)."""
        e = self.engine
        d = self._verified_checkpoint()
        if d is None:
            return None
        ckpt.check_structure(d, param_shapes(self.task.model))
        state = ckpt.read_json(d / "trainer_state.json")
        self._check_same_run(d, state)
        e.load(d)
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.mt_epoch = state.get("mt_epoch", 0)  # absent: written before the extra MT text existed
        self.mt_batch_in_epoch = state.get("mt_batch_in_epoch", 0)
        self.nonfinite_consecutive = state["nonfinite_consecutive"]
        self.nonfinite_total = state["nonfinite_total"]
        self.best = state.get("best", [])
        self.schedule.load_state_dict({"current_step": self.step})
        rank_state = ckpt.load_rank_state(d, e.rank)
        if rank_state is None:
            log.warning("%s: no RNG state for rank %d (different world size?); continuing with fresh "
                        "seeds: not an exact resume", d, e.rank)
            ckpt.seed_everything(ckpt.rank_seed(self.train.seed, e.rank) + self.step)
        else:
            ckpt.set_rng_state(rank_state["rng"])
            e.load_extra_state(rank_state)
        if e.is_main:
            log.info("resumed from %s (epoch %d, batch %d of the epoch)", d, self.epoch, self.batch_in_epoch)
        return self.step

    def _verified_checkpoint(self) -> Path | None:
        """The newest complete checkpoint whose files match their checksums. Newer ones that fail are
        moved aside to ``step_<N>.corrupt`` (and said so); when none verifies, CheckpointError names the
        newest one's bad file and nothing is moved."""
        e = self.engine
        complete, ignored = layout.list_checkpoints(self.ckpt_root)
        if e.is_main:
            for d, why in ignored:
                log.warning("ignoring %s: %s", d, why)
        failed: list[tuple[Path, str]] = []
        for _, d in reversed(complete):
            problem = e.broadcast_object(layout.checksum_problem(d) if e.is_main else None)
            if problem is None:
                if e.is_main:
                    for bad, why in failed:
                        aside = _unused_name(bad.with_name(bad.name + ".corrupt"))
                        bad.rename(aside)
                        log.warning("%s fails verification (%s): moved aside to %s", bad, why, aside.name)
                    if failed:
                        log.warning("falling back to %s, the newest checkpoint that verifies", d)
                e.barrier()
                return d
            failed.append((d, problem))
        if failed:
            raise CheckpointError(f"{failed[0][1]}; no older checkpoint verifies either. Restore the file, or "
                                  "start again in a new train.out_dir")
        return None

    def _check_same_run(self, d: Path, state: dict) -> None:
        """Refuse a checkpoint of another engine or stage; list run-level config differences."""
        saved: dict = {}
        if (d / "config.yaml").is_file():
            try:
                saved = yaml.safe_load((d / "config.yaml").read_text()) or {}
            except yaml.YAMLError as err:
                raise CheckpointError(f"{d / 'config.yaml'}: not valid YAML ({err})") from err
        if state.get("engine", self.train.engine) != self.train.engine:
            raise CheckpointError(f"{d}: written by engine={state['engine']}, this run uses "
                                  f"engine={self.train.engine}; resume with the same engine")
        stage = state.get("stage", (saved.get("train") or {}).get("stage", self.train.stage))
        if stage != self.train.stage:
            raise CheckpointError(
                f"{d}: written by a train.stage={stage} run, this run is train.stage={self.train.stage}; "
                "each stage needs its own train.out_dir (stage 2 reads stage 1's model through train.init_from)")
        if self.engine.is_main:
            for line in ckpt.config_differences(saved, self.run_config):
                log.warning("config differs from the checkpoint's: %s", line)

    def _check_finite_weights(self, what: str) -> None:
        """Stop before a NaN/inf weight reaches disk (a finite loss can still give a non-finite update)."""
        bad = [n for n, p in self.task.model.named_parameters()
               if not bool(torch.isfinite(getattr(p, "ds_tensor", p).detach()).all())]
        if self.engine.any_rank(bool(bad)):
            where = f" (first: {bad[0]})" if bad else " on another rank"
            raise ComSLError(
                f"step {self.step}: {len(bad) or 'some'} parameter(s) hold NaN/inf after the update{where}; "
                f"no {what} written. Lower optim.lr or raise optim.eps, and rerun (it resumes from the last "
                "checkpoint)")

    # ------------------------------------------------------------------ evaluation / export

    def _evaluate(self, logger: MetricsLogger) -> float | None:
        if self.task.evaluate_fn is None:
            return None
        model = self.task.model
        was_training = model.training
        model.eval()
        # Evaluation must not move the training RNG streams (exact resume, eval-interval independence).
        with (torch.random.fork_rng(devices=[]), torch.no_grad(), self.engine.gathered_params(),
              self.engine.autocast()):
            result = self.task.evaluate_fn(model)
        model.train(was_training)
        result = self.engine.broadcast_object(result)
        avg = float(result["avg"])
        record: dict[str, Any] = {"step": self.step}
        for lang, value in sorted(result.get("bleu", {}).items()):
            record[f"dev/bleu/{lang}"] = float(value)
        record["dev/bleu_avg"] = avg
        for key, value in result.get("extra", {}).items():
            record[key] = float(value)
        logger.write(record)
        self.last_dev = avg
        if not self.best or avg > max(b["bleu_avg"] for b in self.best):
            self._export(self.out_dir / "best")
            if self.engine.is_main:
                log.info("step %d: new best dev BLEU %.2f -> %s", self.step, avg, self.out_dir / "best")
        self.best = sorted(self.best + [{"step": self.step, "bleu_avg": avg}],
                           key=lambda b: -b["bleu_avg"])[:max(self.train.keep_best, 1)]
        return avg

    def _export(self, target: Path) -> None:
        self._check_finite_weights(f"export to {target}")
        with self.engine.gathered_params(fp32=True):
            if self.engine.is_main:
                ckpt.export_model(self.task.model, target, self.task.tokenizer)
        self.engine.barrier()

    # ------------------------------------------------------------------ the loop

    def fit(self) -> FitResult:
        """Train until ``max_steps`` (or ``stop_after``), resuming from the newest complete checkpoint.
        Holds ``<out_dir>/LOCK`` throughout: a second run on the same directory is refused."""
        if self.engine is None:
            self._setup()
        lock = self._lock_run_dir()
        try:
            return self._fit()
        finally:
            if lock is not None:
                lock.release()

    def _lock_run_dir(self) -> RunLock | None:
        """Rank 0 takes the run directory's lock; every rank raises when another run holds it."""
        e = self.engine
        lock, refused = None, None
        if e.is_main:
            try:
                lock = RunLock(self.out_dir)
                lock.acquire()
            except RunDirLockedError as err:
                lock, refused = None, str(err)
        refused = e.broadcast_object(refused)
        if refused is not None:
            raise RunDirLockedError(refused)
        return lock

    def _fit(self) -> FitResult:
        t, e = self.train, self.engine
        ckpt.seed_everything(ckpt.rank_seed(t.seed, e.rank))
        resumed = self._resume()
        if e.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.run_config, sort_keys=False))
        stop = t.max_steps if t.stop_after <= 0 else min(t.max_steps, t.stop_after)
        logger = MetricsLogger(self.out_dir, enabled=e.is_main, start_step=self.step)
        logger.open()
        bar = progress_bar(total=t.max_steps, initial=self.step, enabled=e.is_main)
        self.task.model.train()
        try:
            self._train_until(stop, logger, bar, saved_at=self.step if resumed is not None else None)
            if self.step >= t.max_steps:
                self._export(self.out_dir / "final")
        finally:
            bar.close()
            logger.close()
        if e.is_main:
            plot_loss_curve(self.out_dir / "metrics.jsonl", self.out_dir / "loss_curve.png")
        return FitResult(step=self.step, finished=self.step >= t.max_steps, resumed_from=resumed,
                         nonfinite_skipped=self.nonfinite_total,
                         best_bleu=max((b["bleu_avg"] for b in self.best), default=None))

    def _train_until(self, stop: int, logger: MetricsLogger, bar, saved_at: int | None) -> None:
        """Optimizer steps up to ``stop``: update, count non-finite steps, log, evaluate, save."""
        t = self.train
        batches = self._batches()
        window = _Window()
        while self.step < stop:
            self.schedule.apply()
            self._step_lr = main_lr(self.engine.optimizer.param_groups)
            self._set_speech_frozen(SPEECH in self.freeze.frozen(self.step))
            micro = [next(batches) for _ in range(t.grad_accum)]
            window.utts += sum(n for n, _ in micro)
            _add_padding(window.losses, [b for _, b in micro])
            losses = self._one_step([self.engine.prepare(b) for _, b in micro])
            self.step += 1
            self._count_nonfinite(losses is None)
            if losses is not None:
                window.add(losses)
            self.schedule.step()
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == stop:
                self._log_window(window, logger, bar)
                window = _Window()
            evaluated = False
            if self.task.evaluate_fn is not None and (
                    (t.eval_every > 0 and self.step % t.eval_every == 0) or self.step == t.max_steps):
                self._evaluate(logger)
                evaluated = True
            if evaluated or self.step % t.save_every == 0 or self.step == stop:
                self.save_checkpoint()
                saved_at = self.step
                self.last_dev = None
        if self.step >= t.max_steps and saved_at != self.step:
            self.save_checkpoint()

    def _count_nonfinite(self, skipped: bool) -> None:
        """Count a skipped (non-finite) step; too many in a row stop the run."""
        if not skipped:
            self.nonfinite_consecutive = 0
            return
        self.nonfinite_consecutive += 1
        self.nonfinite_total += 1
        if self.engine.is_main:
            log.warning("step %d: non-finite loss, step skipped (%d in a row, %d in total)",
                        self.step, self.nonfinite_consecutive, self.nonfinite_total)
        limit = self.train.max_nonfinite_steps
        if self.nonfinite_consecutive >= limit:
            raise ComSLError(
                f"{self.nonfinite_consecutive} consecutive steps had a non-finite loss (NaN/inf) "
                f"up to step {self.step} (train.max_nonfinite_steps={limit}); "
                "stopping. Lower optim.lr, check the data, or resume from an earlier checkpoint")

    def _log_window(self, window: "_Window", logger: MetricsLogger, bar) -> None:
        record = self._log_record(window.losses, window.steps, window.utts, time.perf_counter() - window.start)
        logger.write(record)
        bar.set_postfix({k: v for k, v in (("loss", record.get("loss/total")), ("lr", record["lr"]),
                                           ("utt/s", record["utt_per_s"])) if v is not None}, refresh=False)

    def _one_step(self, micro: list[Any]) -> dict[str, float] | None:
        """Forward/backward every micro-batch and update; None when the step was skipped.

        Finiteness is agreed on by all ranks after each forward and before its backward, so a
        skipped step touches neither parameters nor optimizer state on any rank.
        """
        e = self.engine
        sums: dict[str, torch.Tensor] = {}
        n = len(micro)
        finite_micro = 0
        for k, batch in enumerate(micro):
            total, parts = e.forward(batch, last_micro=k == n - 1)
            bad = e.any_rank(not bool(torch.isfinite(total.detach()).all()))
            if bad:
                if k == 0 or e.can_discard_accumulated:
                    e.discard()
                    return None
                e.backward_zero(micro[0])
                continue
            e.backward(total)
            finite_micro += 1
            for name, value in {"total": total, **parts}.items():
                v = value.detach().float()
                sums[name] = sums[name] + v if name in sums else v
        if e.step() is False:  # a non-finite gradient norm: skipped like a non-finite loss
            return None
        return {f"loss/{k}": float(v) / finite_micro for k, v in sums.items()}

    def _log_record(self, window: dict[str, list], steps: int, utts: int, seconds: float) -> dict:
        """Window averages over finite steps, averaged over ranks; throughput summed over ranks."""
        gathered = self.engine.gather_objects((window, steps, utts))
        record: dict[str, Any] = {"step": self.step}
        keys = sorted({k for w, _, _ in gathered for k in w}, key=lambda k: (k != "loss/total", k))
        for k in keys:
            total = sum(w[k][0] for w, _, _ in gathered if k in w)
            count = sum(w[k][1] for w, _, _ in gathered if k in w)
            record[k] = total / count
        record["lr"] = self._step_lr  # the LR the last update used
        record["utt_per_s"] = sum(u for _, _, u in gathered) / max(seconds, 1e-9)
        record["nonfinite_skipped"] = self.nonfinite_total
        for k, v in list(record.items()):
            if isinstance(v, float) and not math.isfinite(v):
                record[k] = None
        return record
