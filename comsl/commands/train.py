"""`comsl train CONFIG.yaml [key.path=value ...]`: train, or resume by rerunning on the same out_dir.

Reads top to bottom: parse -> validate -> build the task -> fit. Multi-process runs start this command
under ``torchrun`` (engine ``torch`` or ``deepspeed``) or the ``deepspeed`` launcher.
"""

from __future__ import annotations

import dataclasses
import logging

from comsl.config import load_config

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (rerun the same command to resume)",
        description="Train from a YAML config; `key.path=value` arguments override it. Rerunning the same "
                    "command on the same train.out_dir resumes from its newest complete checkpoint.")
    p.add_argument("config", help="experiment YAML (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value",
                   help="dotted overrides, values parsed as YAML (e.g. optim.lr=1e-4 train.max_steps=10)")
    p.set_defaults(func=run)


def run(args) -> int:
    from comsl.training.engine import dist_info
    from comsl.training.task import build_task
    from comsl.training.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    rank = dist_info()[0]
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    task = build_task(cfg)
    trainer = Trainer(task, cfg.train, cfg.optim, run_config=dataclasses.asdict(cfg),
                      num_workers=cfg.data.num_workers)
    result = trainer.fit()
    if rank == 0:
        where = cfg.train.out_dir
        if result.finished:
            best = f", best dev BLEU {result.best_bleu:.2f} in {where}/best" if result.best_bleu is not None else ""
            print(f"comsl train: finished {result.step} steps; model in {where}/final{best}; "
                  f"{result.nonfinite_skipped} non-finite steps skipped{_audio_skipped(task)}")
        else:
            print(f"comsl train: stopped at step {result.step} of {cfg.train.max_steps}; rerun the same "
                  "command to continue")
    return 0


def _audio_skipped(task) -> str:
    """The utterances whose audio failed to decode during training (each was logged with its id)."""
    failed = getattr(task.dataset, "failed", None)
    return f"; {len(failed)} utterances skipped (audio failed to decode, ids in the log)" if failed else ""
