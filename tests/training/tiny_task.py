"""A tiny task meeting the trainer's contract, and a command line that trains it.

Run as a script (``python tests/training/tiny_task.py --out DIR ...``) so tests can resume in a fresh
process and launch it under ``torchrun``. The model has all five parts, dropout (so RNG restore
matters), ``part_of`` / ``set_trainable`` / ``set_speech_frozen`` / ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from comsl.config import OptimConfig, TrainConfig
from comsl.training.engine import dist_info
from comsl.training.logging import read_metrics
from comsl.training.task import TextBatches, TrainTask
from comsl.training.trainer import Trainer

D_IN, HIDDEN, N_OUT, N_EXAMPLES = 8, 16, 4, 48


class TinyModel(nn.Module):
    """x (B, 8) -> speech (B, 16) -> adapter -> norm -> encoder -> decoder logits (B, 4)."""

    def __init__(self, hidden: int = HIDDEN, dropout: float = 0.2):
        super().__init__()
        self.hidden = hidden
        self.speech = nn.Sequential(nn.Linear(D_IN, hidden), nn.Tanh())
        self.adapter = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.encoder = nn.Linear(hidden, hidden)
        self.decoder = nn.Linear(hidden, N_OUT)
        self.drop = nn.Dropout(dropout)
        self.speech_frozen = False
        self.frozen_calls: list[bool] = []

    def part_of(self, name: str) -> str:
        for prefix, part in (("speech.", "speech_encoder"), ("adapter.", "adapter"),
                             ("encoder.", "text_encoder"), ("decoder.", "text_decoder")):
            if name.startswith(prefix):
                return part
        return "other"

    def set_trainable(self, part: str, trainable: bool) -> None:
        for name, p in self.named_parameters():
            if self.part_of(name) == part:
                p.requires_grad_(trainable)

    def set_speech_frozen(self, frozen: bool) -> None:
        self.speech_frozen = frozen
        self.frozen_calls.append(frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.speech_frozen):
            h = self.speech(x)
        h = self.norm(self.drop(self.adapter(h)))
        return self.decoder(torch.relu(self.encoder(h)))

    def save_pretrained(self, path: str) -> None:
        from safetensors.torch import save_file
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(json.dumps({"hidden": self.hidden}))
        save_file({k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(Path(path) / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str) -> "TinyModel":
        from safetensors.torch import load_file
        model = cls(hidden=json.loads((Path(path) / "config.json").read_text())["hidden"])
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return model


class TinyLoss:
    """Cross-entropy plus a small logit penalty; NaN on the calls in ``nan_steps``, a finite loss with a NaN
    gradient on the calls in ``nan_grad_steps`` (one call per step of a run with grad_accum=1 that does
    not resume); records batch ids."""

    def __init__(self, nan_steps: set[int] | None = None, record: Path | None = None,
                 nan_grad_steps: set[int] | None = None):
        self.nan_steps = nan_steps or set()
        self.nan_grad_steps = nan_grad_steps or set()
        self.record = record
        self.logit_dtypes: set[torch.dtype] = set()  # what the engine's forward ran in
        self.calls = 0

    def __call__(self, model, batch):
        step, self.calls = self.calls, self.calls + 1
        logits = model(batch["x"])
        self.logit_dtypes.add(logits.dtype)
        ce = nn.functional.cross_entropy(logits, batch["y"])
        extra = batch.get("mt_extra")  # the task's second stream (``make_task(mt_text=True)``)
        if extra is not None:
            ce = ce + nn.functional.cross_entropy(model(extra["x"]), extra["y"])
        aux = 0.01 * logits.float().pow(2).mean()
        total = ce + aux
        if step in self.nan_steps:
            total = total * float("nan")
        if step in self.nan_grad_steps:  # adds exactly 0, but d sqrt(u)/du at u = 0 is inf: NaN gradients
            total = total + torch.sqrt(0.0 * logits.float().sum())
        if self.record is not None:
            with self.record.open("a") as f:
                f.write(json.dumps({"ids": batch["ids"], **({"mt_ids": extra["ids"]} if extra else {})}) + "\n")
        return total, {"ce": ce, "aux": aux}


def make_dataset(seed: int = 0, n: int = N_EXAMPLES, prefix: str = "utt") -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return [{"id": f"{prefix}{i}", "x": x[i], "y": int(y[i])} for i in range(n)]


N_TEXT = 20
"""Examples of the second stream: 6 batches an epoch (3, 4, 5, 3, 4, 1), so 8 steps cross an epoch."""


class TinySampler:
    """Variable-size batches (3, 4, 5, ...) of a per-epoch permutation seeded by (seed, epoch), sharded."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        batches, i, k = [], 0, 0
        while i < self.n:
            size = 3 + k % 3
            batches.append(order[i:i + size].tolist())
            i += size
            k += 1
        usable = len(batches) - len(batches) % self.world_size
        return iter(batches[self.rank:usable:self.world_size])

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]


def collate(examples: list[dict]) -> dict:
    return {"ids": [e["id"] for e in examples], "x": torch.stack([e["x"] for e in examples]),
            "y": torch.tensor([e["y"] for e in examples])}


def make_task(*, seed: int = 1, hidden: int = HIDDEN, nan_steps=None, record: Path | None = None,
              evaluate: bool = False, nan_grad_steps=None, mt_text: bool = False) -> TrainTask:
    torch.manual_seed(seed)
    model = TinyModel(hidden=hidden)
    rank, world, _ = dist_info()
    dataset = make_dataset()

    def evaluate_fn(m):
        # "BLEU" = accuracy on the training set, so retention/best have a number to rank by.
        xs = torch.stack([e["x"] for e in dataset]).to(next(m.parameters()).device)
        ys = torch.tensor([e["y"] for e in dataset], device=xs.device)
        acc = float((m(xs.to(next(m.parameters()).dtype)).argmax(-1) == ys).float().mean() * 100)
        return {"bleu": {"fr": acc}, "avg": acc}

    text = None
    if mt_text:
        text = TextBatches(dataset=make_dataset(seed=1, n=N_TEXT, prefix="txt"),
                           sampler=TinySampler(N_TEXT, seed + 1, rank, world), collate_fn=collate)
    return TrainTask(model=model, loss_fn=TinyLoss(nan_steps, record, nan_grad_steps), dataset=dataset,
                     sampler=TinySampler(len(dataset), seed, rank, world), collate_fn=collate,
                     evaluate_fn=evaluate_fn if evaluate else None, mt_text=text)


def configs(out: str, **kw) -> tuple[TrainConfig, OptimConfig]:
    optim = OptimConfig(lr=kw.pop("lr", 3e-2), warmup_steps=kw.pop("warmup_steps", 3), weight_decay=0.1)
    kw.setdefault("save_every", 4)
    kw.setdefault("precision", "auto")  # bf16 where the CPU has bf16 units: the path GPU users take
    train = TrainConfig(out_dir=out, max_steps=kw.pop("max_steps", 8), log_every=1,
                        freeze_speech_fraction=kw.pop("freeze_speech_fraction", 0.25), **kw)
    return train, optim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--engine", default="torch")
    p.add_argument("--zero-stage", type=int, default=None)
    p.add_argument("--ds-config", default=None)
    p.add_argument("--max-steps", type=int, default=8)
    p.add_argument("--stop-after", type=int, default=0)
    p.add_argument("--save-every", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--hidden", type=int, default=HIDDEN)
    p.add_argument("--record", action="store_true", help="append batch ids to <out>/batches_rank<r>.jsonl")
    p.add_argument("--offset-init-by-rank", action="store_true", help="rank r starts from weights + r / 100")
    p.add_argument("--mt-text", action="store_true", help="a second (text) stream as batch['mt_extra']")
    a = p.parse_args(argv)
    rank = dist_info()[0]
    task = make_task(hidden=a.hidden, record=Path(a.out) / f"batches_rank{rank}.jsonl" if a.record else None,
                     mt_text=a.mt_text)
    if a.offset_init_by_rank:
        with torch.no_grad():
            for param in task.model.parameters():
                param.add_(rank / 100)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    train, optim = configs(a.out, max_steps=a.max_steps, stop_after=a.stop_after, engine=a.engine,
                           zero_stage=a.zero_stage, grad_accum=a.grad_accum,
                           deepspeed_config=a.ds_config, save_every=a.save_every, precision=a.precision)
    trainer = Trainer(task, train, optim)
    result = trainer.fit()
    params = {k: v.float().cpu() for k, v in trained_params(trainer).items()}
    torch.save(params, Path(a.out) / f"final_params_rank{rank}.pt")
    if rank == 0:
        torch.save(params, Path(a.out) / "final_params.pt")
        print(json.dumps({"step": result.step, "resumed_from": result.resumed_from}))
    return 0


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
             "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def clean_env() -> dict[str, str]:
    """This environment without the process-group variables an in-process DeepSpeed run left behind
    (a child must pick its own port)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --------------------------------------------------------------------------- the tiny CoVoST-layout corpus

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.speech_pretrained=null",
    "model.speech_arch={d_model: 32, encoder_layers: 1, encoder_attention_heads: 2, encoder_ffn_dim: 64, "
    "decoder_layers: 1, decoder_attention_heads: 2, decoder_ffn_dim: 64, num_mel_bins: 80, "
    "max_source_positions: 550, vocab_size: 64, pad_token_id: 0, bos_token_id: 1, eos_token_id: 2, "
    "decoder_start_token_id: 1}",
    "model.text_arch={d_model: 32, encoder_layers: 2, decoder_layers: 1, encoder_attention_heads: 2, "
    "decoder_attention_heads: 2, encoder_ffn_dim: 64, decoder_ffn_dim: 64, max_position_embeddings: 256}",
]
"""Overrides that shrink configs/mini*_tiny.yaml to seconds-per-step models."""


def build_corpus(root: Path, langs: str = "fr,es", per_lang: int = 11) -> Path:
    """The mini recipe's corpus builder + ``comsl prepare covost2`` into ``root`` (``cv/``, ``manifests/``):
    ``per_lang`` training clips, 2 dev and 1 test clip per language."""
    from mini.corpus import main as build_mini_corpus  # the mini recipe's corpus (examples/covost2/mini)

    from comsl.cli import main as comsl

    assert build_mini_corpus(["--out", str(root / "cv"), "--langs", langs, "--per-lang", str(per_lang),
                              "--dev-per-lang", "2", "--test-per-lang", "1", "--tokenizer-vocab", "300"]) == 0
    assert comsl(["prepare", "covost2", "--cv-root", str(root / "cv"), "--covost-root", str(root / "cv"),
                  "--langs", langs, "--out", str(root / "manifests")]) == 0
    return root


def corpus_paths(corpus: Path, out: Path) -> list[str]:
    """Overrides pointing a mini config at ``corpus`` and ``out``, with short evaluations and a record per step."""
    m = corpus / "manifests"
    return [f"model.tokenizer={corpus / 'cv' / 'tokenizer'}", f"data.train_manifest={m / 'train.tsv'}",
            f"data.dev_manifest={m / 'dev.tsv'}", f"train.out_dir={out}", "data.dev_max_utterances=4",
            "data.eval_max_new_tokens=8", "train.log_every=1"]


# --------------------------------------------------------------------------- helpers of the tests


def run_script(out: Path, *args: str, torchrun: bool = False) -> dict:
    """Run this script (under a 2-process torchrun when ``torchrun``) in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, "--out", str(out), *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--standalone", __file__, "--out", str(out), *args]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def fit(out: Path, task=None, **kw):
    task = task or make_task(record=out / "batches_rank0.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    train, optim = configs(str(out), **kw)
    trainer = Trainer(task, train, optim)
    return trainer, trainer.fit()


def losses(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "utt_per_s"} for r in read_metrics(out / "metrics.jsonl")]


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_params(trainer) -> dict[str, torch.Tensor]:
    """The weights the engine trains, as exports see them: the float32 masters where the model holds
    16-bit copies (bf16), the model's own weights otherwise (every rank calls it: ZeRO-3 gathers)."""
    with trainer.engine.gathered_params(fp32=True):
        return params(trainer.task.model)


def assert_same_run(a: Path, b: Path, params_a: dict) -> None:
    assert losses(a) == losses(b)
    assert (a / "batches_rank0.jsonl").read_text() == (b / "batches_rank0.jsonl").read_text()
    params_b = torch.load(b / "final_params.pt", weights_only=True)
    assert params_a.keys() == params_b.keys()
    for k in params_a:
        assert torch.equal(params_a[k].float(), params_b[k]), k


if __name__ == "__main__":
    sys.exit(main())
