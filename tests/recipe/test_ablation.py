"""The ablation's rows (examples/covost2/mini/ablation.py): each builds a valid stage-2 config from
configs/mini.yaml, each adds exactly one part to the row above, the last is the shipped config."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from comsl.config import load_config
from mini.ablation import PARTS, rows, table

ROOT = Path(__file__).resolve().parents[2]


def _flat(cfg) -> dict[str, object]:
    return {f"{section}.{k}": v for section in ("objectives", "train")
            for k, v in dataclasses.asdict(getattr(cfg, section)).items()}


def test_each_row_builds_a_valid_config_adding_one_part():
    shipped = _flat(load_config(ROOT / "configs" / "mini.yaml"))
    built = [_flat(load_config(ROOT / "configs" / "mini.yaml", overrides)) for _, _, overrides in rows()]
    first = built[0]
    assert first["objectives.w_st"] > 0 and first["objectives.lambda_st"] == 0
    assert all(first[k] == 0 for k in ("objectives.w_asr", "objectives.w_mt", "objectives.w_cml",
                                       "objectives.lambda_mt", "train.freeze_speech_fraction"))
    for (_, _, keys), before, after in zip(PARTS[1:], built, built[1:]):
        changed = {k for k in after if after[k] != before[k]}
        assert len(keys) == 1 and changed == set(keys) and after[keys[0]] == shipped[keys[0]] != 0
    assert built[-1] == shipped  # the last row is ComSL as shipped


def test_rows_also_build_on_the_tiny_config():
    # ablation.sh --speech-init tiny (where Whisper-base cannot be fetched); the tiny speech blocks train
    # from the start, so there the speech-freezing row changes nothing
    for _, _, overrides in rows():
        load_config(ROOT / "configs" / "mini_tiny.yaml", overrides)


def test_table_reads_each_rows_report(tmp_path):
    for name, avg in (("st_only", 10.0), ("mt", 12.5)):
        (tmp_path / "rows" / name / "eval").mkdir(parents=True)
        (tmp_path / "rows" / name / "eval" / "report.json").write_text(json.dumps({"groups": {"Avg": avg}}))
    lines = table(tmp_path).splitlines()
    assert lines[2] == "| ST only | 10.0 | - |  |" and lines[3] == "| + MT | 12.5 | - | +2.5 |"
    assert lines[4] == "| + DDM | (not run) | | |" and len(lines) == 2 + len(PARTS)


def test_ablation_script_uses_only_options_run_sh_has():
    run_sh = (ROOT / "examples" / "covost2" / "run.sh").read_text()
    ablation = (ROOT / "examples" / "covost2" / "ablation.sh").read_text()
    calls = [line for line in ablation.splitlines() if 'bash "$here/run.sh"' in line]
    assert len(calls) == 2
    for option in sorted({o for line in calls for o in re.findall(r"(--[a-z-]+)", line)}):
        assert f"    {option})" in run_sh, option
