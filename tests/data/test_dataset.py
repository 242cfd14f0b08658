import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

from comsl.data.batching import Collator, LengthBucketSampler
from comsl.data.manifest import write_manifest
from comsl.data.dataset import SpeechDataset, TextPairDataset
from comsl.data.features import build_frontend
from comsl.data.processor import encode
from comsl.data.tokenizer import lang_id, train_tokenizer
from comsl.errors import DataError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    entries = []
    for i in range(6):
        path = root / f"u{i}.wav"
        n = 8000 + 1600 * i
        sf.write(path, (0.1 * np.sin(np.arange(n) / (5 + i))).astype(np.float32), 16000)
        lang = "fr" if i % 2 else "ca"
        entries.append({"id": f"{lang}_u{i}", "audio": str(path), "n_samples": n, "duration": f"{n / 16000:.3f}",
                        "src_lang": lang, "tgt_lang": "en", "transcript": f"phrase numéro {i}",
                        "translation": f"sentence number {i}"})
    write_manifest(str(root / "train.tsv"), entries)
    tok = train_tokenizer([e["transcript"] for e in entries] + [e["translation"] for e in entries],
                          root / "tok", vocab_size=60)
    return root, tok


def test_speech_dataset_items_and_dataloader_batches(setup):
    root, tok = setup
    ds = SpeechDataset.from_manifest(str(root / "train.tsv"), tok, cache_bytes=1 << 20)
    item = ds[1]
    assert item["transcript_ids"] == encode(tok, "phrase numéro 1", "fr")
    assert item["translation_ids"] == encode(tok, "sentence number 1", "en")
    assert item["src_lang_id"] == lang_id(tok, "fr_XX") and ds[0]["src_lang_id"] == lang_id(tok, "ca_ES")
    assert item["audio"].shape == (9600,) and ds[1]["audio"] is item["audio"]  # cached
    sampler = LengthBucketSampler(ds.token_lengths(), ds.audio_lengths(), max_frames=200, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=Collator(tok.pad_token_id, build_frontend("whisper_log_mel")))
    batches = list(loader)
    assert sorted(i for b in batches for i in b["ids"]) == sorted(e["id"] for e in ds.entries)
    for b in batches:
        assert b["speech"].shape[1] == 80 and b["speech"].shape[2] * len(b["ids"]) <= 200


def test_audio_cache_stays_within_its_byte_budget(setup):
    root, tok = setup
    sizes = [4 * (8000 + 1600 * i) for i in range(6)]  # float32 waveforms
    budget = sizes[4] + sizes[5]  # the two longest fit, never three clips of the last four
    ds = SpeechDataset.from_manifest(str(root / "train.tsv"), tok, cache_bytes=budget)
    for _ in range(2):
        for i in range(len(ds)):
            assert ds[i]["audio"].shape == (8000 + 1600 * i,)
            assert ds.waves.nbytes <= budget
    assert 0 < len(ds.waves) < len(ds) and ds.waves.evictions > 0
    assert ds[5]["audio"] is ds[5]["audio"]  # the most recent clip is served from the cache
    uncached = SpeechDataset.from_manifest(str(root / "train.tsv"), tok)
    assert [uncached[i]["audio"].shape[0] for i in range(len(uncached))] == [n // 4 for n in sizes]
    assert len(uncached.waves) == 0 and uncached.waves.nbytes == 0  # the default keeps nothing


def test_decode_failure_skips_then_stops_past_fraction(setup, tmp_path):
    root, tok = setup
    ds = SpeechDataset.from_manifest(str(root / "train.tsv"), tok, max_fail_fraction=0.2)
    ds.entries[2] = dict(ds.entries[2], audio=str(tmp_path / "gone.wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    ds.entries[4] = dict(ds.entries[4], audio=str(bad))
    assert ds[2] is None and list(ds.failed) == ["ca_u2"]
    batch = Collator(tok.pad_token_id, build_frontend("waveform"))([ds[i] for i in range(4)])
    assert batch["ids"] == ["ca_u0", "fr_u1", "fr_u3"] and batch["speech"].shape == (3, 8000 + 1600 * 3)
    with pytest.raises(DataError, match=r"2 of 6 utterances failed to decode, more than max_fail_fraction=0.2"):
        ds[4]


def test_text_pair_dataset(setup):
    root, tok = setup
    ds = TextPairDataset.from_manifest(str(root / "train.tsv"), tok)
    batch = Collator(tok.pad_token_id)([ds[0], ds[5]])
    assert set(batch) == {"ids", "src_langs", "src_lang_ids", "transcript_ids", "transcript_mask",
                          "translation_ids", "translation_mask"}
    assert batch["translation_ids"][:, 0].tolist() == [lang_id(tok, "en")] * 2
    assert ds.token_lengths().tolist()[0] == max(len(ds[0]["transcript_ids"]), len(ds[0]["translation_ids"]))


def test_drop_long_text_reports_ids(setup):
    root, tok = setup
    ds = SpeechDataset.from_manifest(str(root / "train.tsv"), tok, cache_bytes=1 << 20)
    ds.entries[1] = dict(ds.entries[1], translation="a much longer sentence number one, with many more words")
    ds[5]
    limit = int(sorted(ds.token_lengths())[-2])
    assert ds.drop_long_text(limit) == ["fr_u1"]
    assert len(ds) == 5 and all(n <= limit for n in ds.token_lengths())
    assert all(ds[i]["audio"].shape == (ds.entries[i]["n_samples"],) for i in range(len(ds)))
