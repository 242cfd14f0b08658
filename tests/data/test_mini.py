import csv
import hashlib

import pytest

from comsl.cli import main
from comsl.data.manifest import read_manifest
from comsl.data.mini import (MiniConfig, build_mini, catalog_pairs, cluster_sentences, fill_placeholders,
                             parse_po, placeholder_values, split_sentences, tts_text)
from comsl.data.processor import encode
from comsl.data.tokenizer import load_tokenizer

PO = r'''msgid ""
msgstr ""
"Language: ru\n"
"Plural-Forms: nplurals=4; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<12 || "
"n%100>=14) ? 1 : n%10==0 || (n%10>=5 && n%10<=9) || (n%100>=11 && n%100<=14)? 2 : 3);\n"

#, python-format
msgid ""
"Ensure this value has at most %(limit_value)d characters (it has "
"%(show_value)d)."
msgid_plural ""
"Ensure this value has at most %(limit_value)d characters (it has "
"%(show_value)d)."
msgstr[0] "форма 0 %(limit_value)d (%(show_value)d)."
msgstr[1] "форма 1 %(limit_value)d (%(show_value)d)."
msgstr[2] "форма 2 %(limit_value)d (%(show_value)d)."
msgstr[3] "форма 3 %(limit_value)d (%(show_value)d)."

#, fuzzy
msgid "Old string"
msgstr "Старая строка"

msgctxt "month"
msgid "May"
msgstr "Май"

#~ msgid "Obsolete"
#~ msgstr "Устарело"
'''


def test_parse_po_multiline_plural_fuzzy_context(tmp_path):
    path = tmp_path / "django.po"
    path.write_text(PO, encoding="utf-8")
    entries, plural = parse_po(str(path))
    assert [e.msgid for e in entries] == [
        "Ensure this value has at most %(limit_value)d characters (it has %(show_value)d).", "Old string", "May"]
    assert entries[0].msgstr[3].startswith("форма 3") and entries[1].fuzzy and not entries[2].fuzzy
    assert plural.startswith("(n%10==1 && n%100!=11 ? 0")


def test_placeholders_filled_identically_in_both_languages():
    msgid = "The %(name)s “%(obj)s” was added successfully. %(count)d left, see {link}."
    values = dict(placeholder_values(msgid, seed=0))
    assert values["count"].isdigit() and not values["name"].isdigit()
    en = fill_placeholders(msgid, values)
    fr = fill_placeholders("%(count)d restants ; l’objet %(name)s « %(obj)s » a été ajouté ({link}).", values)
    for v in values.values():
        assert v in en and v in fr
    assert fill_placeholders("%(other)s", values) is None
    assert dict(placeholder_values(msgid, seed=0)) == values != dict(placeholder_values(msgid, seed=1))


def test_real_catalogs_clusters_and_split():
    fr = catalog_pairs("fr", seed=0)
    assert len(fr) > 400 and all(len(en.split()) >= 2 and "%(" not in en + tr for en, tr in fr.items())
    assert not any("<" in en or "&amp;" in en for en in fr)
    clusters = cluster_sentences(list(fr))
    same = [c for c in clusters if "Enter a valid URL." in c][0]
    assert "Enter a valid UUID." in same  # near-duplicates end in one cluster
    split = split_sentences(clusters, seed=0, dev_fraction=0.1, test_fraction=0.1)
    for c in clusters:
        assert len({split[s] for s in c}) == 1
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "dev", "test")}
    assert abs(counts["dev"] - 0.1 * len(fr)) <= 2 and abs(counts["test"] - 0.1 * len(fr)) <= 2


def test_tts_text_romanises_chinese_and_japanese():
    assert tts_text("zh-CN", "用户名。").split() == ["yong4", "hu4", "ming2", "."]
    assert tts_text("ja", "入力") == "にゅうりょく"


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_mini_then_prepare_covost2_end_to_end(tmp_path, capsys):
    out = tmp_path / "mini"
    report = build_mini(MiniConfig(out=str(out), langs=["fr", "mn", "ja"], per_lang=8, num_workers=1,
                                   tokenizer_vocab=200))
    assert "leaving out mn" in capsys.readouterr().out and report["left_out"] == ["mn"]
    assert set(report["languages"]) == {"fr", "ja"}
    # The same English sentence is in the same split in every language.
    split_of = {}
    for lang in ("fr", "ja"):
        rows = _rows(out / f"covost_v2.{lang}_en.tsv")
        assert rows[0] == ["path", "sentence", "translation", "client_id", "split"] and len(rows) == 9
        for path, _, en, _, split in rows[1:]:
            assert split_of.setdefault(en, split) == split
            assert (out / lang / "clips" / path).stat().st_size > 0
    assert sum(report["unique_english"].values()) == len(split_of)

    again = build_mini(MiniConfig(out=str(tmp_path / "again"), langs=["fr"], per_lang=8, num_workers=1,
                                  tokenizer_vocab=0))
    assert again["unique_english"] != {}
    assert (tmp_path / "again" / "covost_v2.fr_en.tsv").read_text() == (out / "covost_v2.fr_en.tsv").read_text()
    mp3 = sorted((out / "fr" / "clips").iterdir())[0]
    assert hashlib.sha256(mp3.read_bytes()).digest() == \
        hashlib.sha256((tmp_path / "again" / "fr" / "clips" / mp3.name).read_bytes()).digest()

    assert main(["prepare", "covost2", "--cv-root", str(out), "--covost-root", str(out),
                 "--out", str(tmp_path / "manifests"), "--max-seconds", "30", "--workers", "1"]) == 0
    entries = [e for s in ("train", "dev", "test") for e in read_manifest(str(tmp_path / "manifests" / f"{s}.tsv"))]
    assert {e["src_lang"] for e in entries} == {"fr", "ja"} and len(entries) == 16
    tok = load_tokenizer(out / "tokenizer")
    assert encode(tok, entries[0]["translation"], "en")[-1] == tok.eos_token_id
