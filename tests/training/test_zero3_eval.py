"""Generation under ZeRO-3: two gloo ranks share the dev decoding in lock-step, never hang, and give the
hypotheses (and scores) one process gives, with one rank running out of batches first and the ranks'
sentences finishing at different steps. The same run then trains a step and exports consolidated
safetensors that ``ComSLModel.from_pretrained`` loads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comsl.data.batching import FRAMES_PER_SECOND, longest_first_batches
from comsl.evaluation.decode import DecodeConfig, Decoder, Utterance
from comsl.evaluation.dev import TextDevEvaluator, dev_scores

ROOT = Path(__file__).resolve().parents[2]
N_UTTS = 5  # one per batch: rank 0 decodes 3 batches, rank 1 decodes 2 and then keeps pace
DECODE = DecodeConfig(beam=2, max_new_tokens=10, max_batch_size=1)
TIMEOUT_S = 240
ZERO3 = {"zero_optimization": {
    "stage": 3,
    # gather and release every module's parameters at every forward, as a real-sized model does
    "stage3_param_persistence_threshold": 0, "stage3_max_reuse_distance": 0, "stage3_prefetch_bucket_size": 0,
}}


def _data() -> tuple[list[Utterance], list[np.ndarray]]:
    seconds = [0.9, 0.5, 0.7, 0.3, 0.6]
    tones = [150.0, 600.0, 1800.0, 3500.0, 6000.0]  # different spectra, so the decoder sees different inputs
    utts = [Utterance(id=f"u{i}", audio="", src_lang="fr" if i % 2 else "de", duration=s,
                      transcript=f"le chat {i}", translation=f"the cat {i}") for i, s in enumerate(seconds)]
    return utts, [(0.3 * np.sin(2 * np.pi * f * np.arange(int(s * 16000)) / 16000)).astype(np.float32)
                  for s, f in zip(seconds, tones)]


def _decode_all(model, tokenizer) -> dict:
    utts, audio = _data()
    decoder = Decoder(model, tokenizer, DECODE)
    hyps = decoder.decode(utts, progress=False, audio=audio)
    return {"hyps": hyps, "dev": dev_scores(utts, hyps, "st")["bleu"],
            "text": TextDevEvaluator(utts, tokenizer, DECODE)(model)["bleu"]}


def _rank(rank: int, port: str, model_dir: str, out_dir: str) -> None:
    """One rank (its own process): the model under DeepSpeed ZeRO-3 (our engine), then the dev decoding
    of speech (``Decoder``, as ``DevEvaluator`` and ``comsl evaluate`` run it) and of text (stage 1)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port)
    torch.set_num_threads(1)
    from comsl.config import ObjectiveConfig, OptimConfig, TrainConfig
    from comsl.data.tokenizer import load_tokenizer
    from comsl.objectives import ComSLMultiTaskLoss
    from comsl.models.composite import ComSLModel
    from comsl.training.engine import DeepSpeedEngine

    tokenizer = load_tokenizer(model_dir)
    model = ComSLModel.from_pretrained(model_dir)
    ds_json = os.path.join(out_dir, "zero3.json")
    st_only = ComSLMultiTaskLoss(ObjectiveConfig(w_asr=0.0, w_st=1.0, w_mt=0.0, w_cml=0.0, lambda_st=0.0),
                                 mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    engine = DeepSpeedEngine(model, st_only, [{"params": list(model.parameters())}],
                             optim=OptimConfig(), train=TrainConfig(engine="deepspeed", deepspeed_config=ds_json))
    assert engine.zero_stage == 3 and all(p.numel() == 0 for p in model.parameters())  # partitioned
    decoded: list[int] = []
    real = Decoder.decode_waveforms

    def counting(self, waves, src_langs, sync=None):
        if getattr(sync, "__name__", "") != "idle":
            decoded.append(len(waves))
        return real(self, waves, src_langs, sync)

    Decoder.decode_waveforms = counting
    model.eval()
    with torch.no_grad():
        result = _decode_all(model, tokenizer)
    result["decoded"] = sum(decoded)
    _train_step_and_export(engine, model, tokenizer, out_dir)
    with open(os.path.join(out_dir, f"rank_{rank}.json"), "w") as f:
        json.dump(result, f)


def _train_step_and_export(engine, model, tokenizer, out_dir: str) -> None:
    """One optimizer step, DeepSpeed's own checkpoint, then the export the trainer writes (``best/``,
    ``final/``): full weights gathered from the ZeRO-3 partitions, written by rank 0."""
    from comsl.training.checkpoint import export_model

    utts, audio = _data()
    proc = Decoder(model, tokenizer, DECODE).processor
    speech, mask = proc.features(audio[:1])
    target = torch.tensor(proc.encode([utts[0].translation], ["en"]))
    source = torch.tensor(proc.encode([utts[0].transcript], ["fr"]))
    batch = dict(speech=speech, speech_mask=mask, src_lang_ids=torch.tensor([proc.lang_id("fr")]),
                 translation_ids=target, translation_mask=torch.ones_like(target),
                 transcript_ids=source, transcript_mask=torch.ones_like(source))
    loss, _ = engine.forward(batch, True)
    engine.backward(loss)
    engine.save(Path(out_dir) / "ckpt")
    with engine.gathered_params():
        if engine.is_main:
            export_model(model, Path(out_dir) / "export", tokenizer)
    engine.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_zero3_ranks_decode_like_one_process(make_model, tokenizer, tmp_path):
    model = make_model(seed=3)
    with torch.no_grad():  # a decoder that listens to its input, near the point where </s> wins
        model.text_model.model.encoder.layer_norm.weight.mul_(30)
        model.text_model.final_logits_bias[0, tokenizer.eos_token_id] += 0.1
    model.save_pretrained(tmp_path / "model", tokenizer=tokenizer)
    (tmp_path / "zero3.json").write_text(json.dumps(ZERO3))
    with torch.no_grad():
        alone = _decode_all(model, tokenizer)

    # the setting the test is about: shards of different sizes whose sentences end at different steps
    utts, audio = _data()
    batches = longest_first_batches([u.duration * FRAMES_PER_SECOND for u in utts],
                                    max_frames=DECODE.batch_seconds * FRAMES_PER_SECOND,
                                    max_batch_size=DECODE.max_batch_size)
    proc = Decoder(model, tokenizer, DECODE).processor
    steps = []
    for (i,) in batches:
        speech, mask = proc.features([audio[i]])
        out = model.generate_speech(speech, mask, torch.tensor([proc.lang_id(utts[i].src_lang)]),
                                    proc.lang_id("en"), num_beams=DECODE.beam, max_new_tokens=DECODE.max_new_tokens)
        steps.append(out.shape[1])
    # round 0: rank 1's sentence ends first (it idles within the batch); round 2: rank 1 has no batch
    assert len(batches) == N_UTTS and steps[0] != steps[1], steps

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from tests.training.test_zero3_eval import _rank; _rank(int(sys.argv[1]), *sys.argv[2:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(port), str(tmp_path / "model"), str(tmp_path)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"ZeRO-3 decoding hung (> {TIMEOUT_S} s)")
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        assert result["hyps"] == alone["hyps"]
        assert result["dev"] == pytest.approx(alone["dev"]) and result["text"] == pytest.approx(alone["text"])
    assert [r["decoded"] for r in ranks] == [3, 2]  # each rank decoded only its own share

    # the ZeRO-3 run's export: consolidated safetensors that from_pretrained loads, equal to the weights
    # DeepSpeed's own tool gathers from the partitioned checkpoint, after a step that changed them
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from comsl.models.composite import ComSLModel

    exported = ComSLModel.from_pretrained(str(tmp_path / "export")).state_dict()
    reference = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "ckpt"), tag="deepspeed")
    before = model.state_dict()
    assert any(not torch.equal(exported[k], before[k]) for k in before)
    for name, value in reference.items():
        assert torch.equal(exported[name.removeprefix("model.")], value), name
