"""`comsl train`: config errors are reported by key; the command reaches the task glue."""

from __future__ import annotations

from comsl.cli import main


def test_misspelled_key_fails_naming_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train_manifest: x.tsv\ntrain:\n  max_step: 3\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.max_step: unknown key (did you mean 'max_steps'?)" in err


def test_bad_override_type_fails_naming_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train_manifest: x.tsv\n")
    assert main(["train", str(cfg), "train.stop_after=soon"]) == 2
    assert "train.stop_after: expected int" in capsys.readouterr().err
