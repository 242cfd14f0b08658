"""The mini recipe's corpus (examples/covost2/mini): catalogs through polib, placeholder fills, the
near-copy clustering, the split across every source, and a small corpus built end to end."""

import csv
import hashlib
import os
import re
from pathlib import Path

import polib
import pytest

from comsl.cli import main
from comsl.data.manifest import read_manifest
from comsl.data.processor import encode
from comsl.data.tokenizer import load_tokenizer
from mini import text
from mini.catalogs import catalog_pairs, fill_placeholders, placeholder_values, read_catalog
from mini.corpus import MiniConfig, build_mini
from mini.debian import UNPACKED, debian_roots
from mini.speech import tts_text
from mini.split import cluster_sentences, normalise, split_sentences

ROOT = Path(__file__).resolve().parents[2]

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
msgid "Old string here"
msgstr "Старая строка"

msgctxt "month"
msgid "Next May"
msgstr "Следующий май"

msgid "Usage: git add [<options>]"
msgstr "Использование: git add [<параметры>]"

#~ msgid "Obsolete string"
#~ msgstr "Устарело"
'''


def test_catalog_reader_plural_fuzzy_obsolete_context_and_code(tmp_path):
    path = tmp_path / "django.po"
    path.write_text(PO, encoding="utf-8")
    pairs = read_catalog(str(path), "ru", "django", seed=0)
    assert [p.english.split()[0] for p in pairs] == ["Ensure", "Next"]  # fuzzy, obsolete, code-like dropped
    first = pairs[0]
    n = int(re.search(r"at most (\d+)", first.english).group(1))
    form = 0 if n % 10 == 1 and n % 100 != 11 else 1 if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else 2
    assert first.translation.startswith(f"форма {form} {n} ")  # the plural form of the number filled in
    # the same reader on the compiled catalog
    polib.pofile(str(path)).save_as_mofile(str(tmp_path / "django.mo"))
    assert read_catalog(str(tmp_path / "django.mo"), "ru", "x", seed=0) == [
        type(p)(p.lang, p.english, p.translation, "x") for p in pairs]


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
    # C-format positions: a translation that reorders them with %N$ gets each value in its place
    values = dict(placeholder_values("copy %s to %s", seed=0))
    assert fill_placeholders("nach %2$s kopieren: %1$s", values) == f"nach {values['#1']} kopieren: {values['#0']}"


def _brute_force_clusters(sentences, jaccard, prefix_words=4):
    """The clustering's definition, all pairs compared."""
    sentences = sorted(set(sentences))
    group = list(range(len(sentences)))
    w = [normalise(s).split() for s in sentences]

    def related(i, j):
        a, b = set(w[i]), set(w[j])
        return (w[i] == w[j] or (len(w[i]) > prefix_words and w[i][:prefix_words] == w[j][:prefix_words])
                or len(a & b) >= jaccard * len(a | b))

    changed = True
    while changed:
        changed = False
        for i in range(len(sentences)):
            for j in range(i + 1, len(sentences)):
                if related(i, j) and group[i] != group[j]:
                    old, new = max(group[i], group[j]), min(group[i], group[j])
                    group[:] = [new if g == old else g for g in group]
                    changed = True
    out = {}
    for i, s in enumerate(sentences):
        out.setdefault(group[i], []).append(s)
    return sorted(out.values())


def test_clusters_equal_the_all_pairs_definition():
    sentences = [en for en in (p.english for p in catalog_pairs("fr", seed=0))][:300]
    sentences += ["enter a valid url", "ENTER A VALID URL!!", "Cannot open the file now", "cannot open file now"]
    assert cluster_sentences(sentences, 0.6) == _brute_force_clusters(sentences, 0.6)


def test_real_catalogs_split_whole_clusters_and_fill_each_languages_need():
    fr = catalog_pairs("fr", seed=0)
    assert len(fr) > 400 and all(p.source == "django" for p in fr)
    assert not any("<" in p.english or "&amp;" in p.english or "%(" in p.english for p in fr)
    clusters = cluster_sentences([p.english for p in fr])
    assert "Enter a valid UUID." in [c for c in clusters if "Enter a valid URL." in c][0]  # near-duplicates
    langs_of = {p.english: {"fr"} for p in fr}
    split = split_sentences(clusters, langs_of, {"dev": {"fr": 30}, "test": {"fr": 60}}, seed=0)
    for c in clusters:
        assert len({split[s] for s in c}) == 1
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "dev", "test")}
    assert 60 <= counts["test"] < 64 and 30 <= counts["dev"] < 34 and counts["train"] == len(fr) - counts["test"] - counts["dev"]


def test_tts_text_romanises_chinese_and_japanese():
    assert tts_text("zh-CN", "用户名。").split() == ["yong4", "hu4", "ming2", "."]
    assert tts_text("ja", "入力") == "にゅうりょく"


def test_without_apt_the_corpus_degrades_to_django_with_one_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    assert debian_roots(str(tmp_path / "cache"), ["git", "tar"]) == []
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "git, tar (apt-get/dpkg-deb not found)" in out and "Django" in out


def _fake_debian_package(cache: Path, django_english: list[str]) -> None:
    """An unpacked 'testpkg' whose French .mo holds near-copies of Django's English (other case and
    punctuation, another translation) and new sentences, compiled by polib and read as Debian's are."""
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2; plural=(n > 1);"}
    for k, en in enumerate(django_english):
        po.append(polib.POEntry(msgid=en.lower().rstrip(".") + " !", msgstr=f"variante numéro {k} de la phrase"))
    for k in range(40):
        po.append(polib.POEntry(msgid=f"message number {k} of the test package",
                                msgstr=f"message numéro {k} du paquet de test"))
    target = cache / "root" / "testpkg" / "usr" / "share" / "locale" / "fr" / "LC_MESSAGES"
    target.mkdir(parents=True)
    po.save_as_mofile(str(target / "testpkg.mo"))
    (cache / "root" / "testpkg" / UNPACKED).touch()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small French corpus from Django's catalogs and one Debian-style package, with its manifests."""
    tmp = tmp_path_factory.mktemp("mini")
    _fake_debian_package(tmp / "cache", [p.english for p in catalog_pairs("fr", seed=0)])
    cfg = MiniConfig(out=str(tmp / "corpus"), langs=["fr"], per_lang=6, dev_per_lang=3, test_per_lang=4,
                     max_seconds=2.5, num_workers=1, tokenizer_vocab=0, debian_cache=str(tmp / "cache"),
                     debian_packages=["testpkg"])
    report = build_mini(cfg)
    assert main(["prepare", "covost2", "--cv-root", cfg.out, "--covost-root", cfg.out, "--out", str(tmp / "man"),
                 "--max-seconds", "30", "--workers", "1"]) == 0
    text_rc = text.main(["--corpus", cfg.out, "--langs", "fr", "--manifests", str(tmp / "man"),
                         "--out", str(tmp / "man" / "text_train.tsv")])
    return tmp, cfg, report, text_rc


def test_no_dev_or_test_sentence_is_a_training_target_in_any_source(built):
    tmp, cfg, _, text_rc = built
    assert text_rc == 0  # mini.text found no held-out sentence among the training text
    pairs = text.read_pairs(cfg.out)
    assert {p["source"] for p in pairs} == {"django", "debian:testpkg"}
    held_out = [p["english"] for p in pairs if p["split"] != "train"]
    train = [p["english"] for p in pairs if p["split"] == "train"]
    assert held_out and train
    # the Debian package holds a near-copy of every Django sentence: each pair lands on one side
    assert text.leaked(train, held_out) == []
    speech_train = [r["translation"] for r in read_manifest(tmp / "man" / "train.tsv")]
    stage1_text = [r["translation"] for r in read_manifest(tmp / "man" / "text_train.tsv")]
    held_out_speech = [r["translation"] for s in ("dev", "test") for r in read_manifest(tmp / "man" / f"{s}.tsv")]
    assert text.leaked(speech_train + stage1_text, held_out + held_out_speech) == []
    assert sorted(stage1_text) == sorted(train)  # stage 1 gets all train-split text, of every source


def test_text_refuses_a_held_out_sentence_among_the_training_text(built, tmp_path, capsys):
    tmp, cfg, _, _ = built
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = text.read_pairs(cfg.out)
    test_en = next(r["english"] for r in rows if r["split"] == "test" and r["clip"])
    with open(corpus / "pairs.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(rows[0]) + "\n" + "".join("\t".join(r.values()) + "\n" for r in rows))
        f.write(f"fr\t{test_en.upper()}\tune copie\tdjango\ttrain\t\n")  # a near-copy marked train
    assert text.main(["--corpus", str(corpus), "--langs", "fr", "--manifests", str(tmp / "man"),
                      "--out", str(tmp_path / "t.tsv")]) == 1
    assert "1 dev/test sentences would enter stage-1 text" in capsys.readouterr().err


def test_quotas_hold_with_long_clips_replaced_and_sources_recorded(built):
    tmp, cfg, report, _ = built
    fr = report["languages"]["fr"]
    assert [fr[s]["clips"] for s in ("train", "dev", "test")] == [6, 3, 4]
    assert fr["pairs_per_source"]["debian:testpkg"] >= 40 and fr["pairs_per_source"]["django"] > 400
    entries = {s: read_manifest(tmp / "man" / f"{s}.tsv") for s in ("train", "dev", "test")}
    assert [len(entries[s]) for s in ("train", "dev", "test")] == [6, 3, 4]
    assert max(e["duration"] for es in entries.values() for e in es) <= cfg.max_seconds
    assert fr["too_long_discarded"] > 0  # 2.5 s is short: some clips were replaced
    assert len(os.listdir(Path(cfg.out) / "fr" / "clips")) == 13  # the discarded ones are deleted


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_mini_then_prepare_covost2_end_to_end(tmp_path, capsys):
    out = tmp_path / "mini"
    cfg = dict(per_lang=4, dev_per_lang=2, test_per_lang=2, max_seconds=30, num_workers=1)
    report = build_mini(MiniConfig(out=str(out), langs=["fr", "mn", "ja"], tokenizer_vocab=1000, **cfg))
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

    again = build_mini(MiniConfig(out=str(tmp_path / "again"), langs=["fr"], tokenizer_vocab=0, **cfg))
    assert again["languages"]["fr"]["test"]["clips"] == 2
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


def test_run_sh_passes_the_corpus_defaults():
    """run.sh's mini defaults are MiniConfig's (one number each, not two that drift apart)."""
    script = (ROOT / "examples" / "covost2" / "run.sh").read_text()
    d = MiniConfig(out="")
    for var, value in [("per_lang", d.per_lang), ("dev_per_lang", d.dev_per_lang), ("test_per_lang", d.test_per_lang),
                       ("espeak_speed", d.espeak_speed), ("espeak_gap", d.espeak_gap), ("max_seconds", d.max_seconds)]:
        assert float(re.search(rf"^{var}=(\S+)$", script, re.M).group(1)) == value, var
    assert d.test_per_lang >= 50
