import csv

from comsl.cli import main
from comsl.data.manifest import read_manifest
from comsl.data.pseudo import PseudoConfig, extra_clips, pseudo_label
from mini.corpus import MiniConfig, build_mini  # the mini recipe's corpus (examples/covost2/mini)


def test_pseudo_labels_only_clips_outside_covost_and_prepare_reads_them(tmp_path, make_model, tokenizer):
    mini = tmp_path / "mini"
    build_mini(MiniConfig(out=str(mini), langs=["fr"], per_lang=4, dev_per_lang=1, test_per_lang=1, extra_per_lang=3,
                          num_workers=1, tokenizer_vocab=0))
    extra = extra_clips(str(mini), str(mini), "fr")
    with open(mini / "covost_v2.fr_en.tsv", encoding="utf-8") as f:
        in_covost = {r[0] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    assert len(extra) == 3 and not {c["path"] for c in extra} & in_covost

    # The translator interface: any function (texts, lang) -> translations.
    report = pseudo_label(PseudoConfig(cv_root=str(mini), covost_root=str(mini), out=str(tmp_path / "p1"),
                                       langs=["fr"], batch_size=2),
                          lambda texts, lang: [f"{lang}: {t.upper()}" for t in texts])
    assert report == {"fr": {"labelled": 3, "empty_translation": 0}}
    assert main(["prepare", "covost2", "--cv-root", str(mini), "--covost-root", str(tmp_path / "p1"),
                 "--out", str(tmp_path / "m1"), "--max-seconds", "30", "--workers", "1"]) == 0
    rows = read_manifest(str(tmp_path / "m1" / "train.tsv"))
    assert sorted(r["translation"] for r in rows) == sorted(f"fr: {c['sentence'].upper()}" for c in extra)

    # End to end with a (tiny, untrained) exported model through the command.
    model = make_model()
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)
    assert main(["prepare", "pseudo", "--model", str(tmp_path / "model"), "--cv-root", str(mini),
                 "--covost-root", str(mini), "--langs", "fr", "--out", str(tmp_path / "p2"), "--beams", "1",
                 "--max-new-tokens", "6"]) == 0
    with open(tmp_path / "p2" / "covost_v2.fr_en.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 4 and {r[4] for r in rows[1:]} == {"train"}
