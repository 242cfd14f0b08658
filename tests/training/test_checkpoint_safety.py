"""Resuming never runs code planted in a checkpoint: every torch state file we or DeepSpeed read is
loaded with ``weights_only=True`` and a refused file stops the run with one line naming it."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from comsl import run_layout as layout
from comsl.errors import CheckpointError

from .tiny_task import fit


class Planted:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the loader runs planted code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def plant(path: Path, marker: Path, ckpt_dir: Path) -> None:
    """Replace ``path`` and record its new checksum, as an attacker with write access can."""
    torch.save({"state": Planted(marker), "weights": torch.zeros(2)}, path)
    layout.write_checksums(ckpt_dir)


TORCH_FILES = ["rank_0.pt", "optimizer.pt"]
DEEPSPEED_FILES = ["rank_0.pt", "deepspeed/mp_rank_00_model_states.pt",
                   "deepspeed/*zero_pp_rank_0_mp_rank_00_optim_states.pt"]  # bf16_ prefix in bf16


@pytest.mark.parametrize("engine,name", [("torch", n) for n in TORCH_FILES]
                         + [("deepspeed", n) for n in DEEPSPEED_FILES])
def test_planted_pickle_runs_nothing_and_names_the_file(tmp_path, engine, name):
    out = tmp_path / "run"
    kw = dict(max_steps=4, save_every=2, engine=engine, zero_stage=2 if engine == "deepspeed" else None)
    fit(out, stop_after=2, **kw)
    ckpt_dir = out / "checkpoints" / "step_2"
    matches = sorted(ckpt_dir.glob(name))
    assert len(matches) == 1 and matches[0].is_file(), matches
    target = matches[0]
    marker = tmp_path / "planted_code_ran"
    plant(target, marker, ckpt_dir)
    with pytest.raises(CheckpointError) as err:
        fit(out, **kw)
    assert not marker.exists()
    msg = str(err.value)
    assert str(target) in msg and "\n" not in msg
    assert "builtins.open" in msg or "io.open" in msg
