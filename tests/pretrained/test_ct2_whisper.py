import json

import numpy as np
import pytest
import torch

from comsl.cli import main
from comsl.errors import CheckpointError
from comsl.pretrained.ct2_whisper import CONVERSION_MARKER, convert_ct2_whisper

from .conftest import D, FFN, HEADS, LAYERS, MELS, SRC_POS, TGT_POS, TOKEN_ID, VOCAB, tiny_variables, \
    write_tiny_model_dir


def _back_to_ct2(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Inverse of the importer's mapping, written independently: re-fuse q/k/v (zero key bias) and
    k/v and rename to CTranslate2 names."""
    out = {}

    def put(name, t):
        out[name] = t.numpy()

    def lin(src, dst):
        put(f"{dst}/weight", sd[f"{src}.weight"])
        put(f"{dst}/bias", sd[f"{src}.bias"])

    def ln(src, dst):
        put(f"{dst}/gamma", sd[f"{src}.weight"])
        put(f"{dst}/beta", sd[f"{src}.bias"])

    def attn_self(src, dst):
        put(f"{dst}/linear_0/weight", torch.cat([sd[f"{src}.{p}_proj.weight"] for p in "qkv"]))
        put(f"{dst}/linear_0/bias", torch.cat([sd[f"{src}.q_proj.bias"], torch.zeros(D), sd[f"{src}.v_proj.bias"]]))
        lin(f"{src}.out_proj", f"{dst}/linear_1")

    for side, n in (("encoder", LAYERS), ("decoder", LAYERS)):
        for i in range(n):
            s, d = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            attn_self(f"{s}.self_attn", f"{d}/self_attention")
            ln(f"{s}.self_attn_layer_norm", f"{d}/self_attention/layer_norm")
            if side == "decoder":
                lin(f"{s}.encoder_attn.q_proj", f"{d}/attention/linear_0")
                put(f"{d}/attention/linear_1/weight",
                    torch.cat([sd[f"{s}.encoder_attn.k_proj.weight"], sd[f"{s}.encoder_attn.v_proj.weight"]]))
                put(f"{d}/attention/linear_1/bias", torch.cat([torch.zeros(D), sd[f"{s}.encoder_attn.v_proj.bias"]]))
                lin(f"{s}.encoder_attn.out_proj", f"{d}/attention/linear_2")
                ln(f"{s}.encoder_attn_layer_norm", f"{d}/attention/layer_norm")
            lin(f"{s}.fc1", f"{d}/ffn/linear_0")
            lin(f"{s}.fc2", f"{d}/ffn/linear_1")
            ln(f"{s}.final_layer_norm", f"{d}/ffn/layer_norm")
        ln(f"model.{side}.layer_norm", f"{side}/layer_norm")
        put(f"{side}/position_encodings/encodings", sd[f"model.{side}.embed_positions.weight"])
    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    put("decoder/projection/weight", sd["proj_out.weight"])
    return out


def test_weights_round_trip_exactly(tiny_hf):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_hf)
    sd = model.state_dict()
    assert all(t.dtype == torch.float32 for t in sd.values())
    back = _back_to_ct2(sd)
    source, _ = tiny_variables()
    tensors = {n: v for n, v in source.items() if v.ndim > 0}
    assert set(back) == set(tensors) | {"decoder/projection/weight"}
    for name, value in tensors.items():
        assert np.array_equal(back[name], value.astype(np.float32)), name
    assert np.array_equal(back["decoder/projection/weight"], source["decoder/embeddings/weight"].astype(np.float32))
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_config_comes_from_shapes_and_attributes(tiny_hf):
    config = json.loads((tiny_hf / "config.json").read_text())
    expected = {"d_model": D, "encoder_layers": LAYERS, "decoder_layers": LAYERS, "encoder_attention_heads": HEADS,
                "decoder_attention_heads": HEADS, "encoder_ffn_dim": FFN, "decoder_ffn_dim": FFN,
                "vocab_size": VOCAB, "num_mel_bins": MELS, "max_source_positions": SRC_POS,
                "max_target_positions": TGT_POS, "activation_function": "gelu", "tie_word_embeddings": True,
                "decoder_start_token_id": TOKEN_ID["<|startoftranscript|>"], "eos_token_id": TOKEN_ID["<|endoftext|>"]}
    assert {k: config[k] for k in expected} == expected
    marker = json.loads((tiny_hf / CONVERSION_MARKER).read_text())
    assert marker["verified"] is False and marker["spec"] == "WhisperSpec r3" and marker["source_dtypes"] == ["float16"]
    assert (tiny_hf / "LICENSE").read_text().startswith("MIT License")


def test_tokenizer_and_generation_config_drive_language_and_task(tiny_hf):
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperTokenizer

    tok = WhisperTokenizer.from_pretrained(tiny_hf)
    assert len(tok) == VOCAB and tok.convert_ids_to_tokens(VOCAB - 1) == "<|0.40|>"  # 21 timestamps, 0.02 s apart
    ids = tok(" hello world", add_special_tokens=False).input_ids
    assert ids == [0, 8, 5, 12, 12, 15, 0, 23, 15, 18, 12, 4] and tok.decode(ids) == " hello world"
    prompt = [TOKEN_ID[t] for t in ("<|startoftranscript|>", "<|fr|>", "<|translate|>", "<|notimestamps|>")]
    assert tok.decode(prompt + ids + [TOKEN_ID["<|endoftext|>"]], skip_special_tokens=True) == " hello world"
    gen = GenerationConfig.from_pretrained(tiny_hf)
    assert gen.lang_to_id == {"<|en|>": 29, "<|fr|>": 30, "<|de|>": 31, "<|zh|>": 32}
    assert gen.task_to_id == {"transcribe": TOKEN_ID["<|transcribe|>"], "translate": TOKEN_ID["<|translate|>"]}
    assert gen.no_timestamps_token_id == TOKEN_ID["<|notimestamps|>"] and gen.is_multilingual
    assert gen.suppress_tokens == [1, 2, 28] and gen.begin_suppress_tokens == [0, 27]
    assert gen.alignment_heads == [[1, 0], [1, 2]] and gen.max_length == TGT_POS
    fe = WhisperFeatureExtractor.from_pretrained(tiny_hf)
    assert (fe.feature_size, fe.n_samples, fe.nb_max_frames) == (MELS, 480000, 2 * SRC_POS)


def test_forward_and_generate_follow_the_whisper_prompt(tiny_hf):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_hf).eval()
    torch.manual_seed(0)
    features = torch.randn(1, MELS, 2 * SRC_POS)
    prompt = [TOKEN_ID[t] for t in ("<|startoftranscript|>", "<|fr|>", "<|translate|>", "<|notimestamps|>")]
    # Timestamp tokens are suppressed: a random tiny model emits them and generate() then decodes the
    # 30 s window segment by segment (as whisper_zero_shot also does for real models).
    suppress = [1, 2, 28] + list(range(TOKEN_ID["<|notimestamps|>"] + 1, VOCAB))
    with torch.no_grad():
        logits = model(input_features=features, decoder_input_ids=torch.tensor([prompt])).logits
        generated = model.generate(features, language="fr", task="translate", num_beams=1, max_new_tokens=6,
                                   suppress_tokens=suppress)[0]
        # the same greedy decode by hand: forced prompt, suppress lists from config.json, stop at <|endoftext|>
        tokens, eot = list(prompt), TOKEN_ID["<|endoftext|>"]
        for step in range(6):
            scores = model(input_features=features, decoder_input_ids=torch.tensor([tokens])).logits[0, -1]
            scores[suppress] = -float("inf")
            if step == 0:
                scores[[0, eot]] = -float("inf")
            tokens.append(int(scores.argmax()))
            if tokens[-1] == eot:
                break
    assert logits.shape == (1, 4, VOCAB) and torch.isfinite(logits).all()
    assert generated.tolist() == tokens[len(prompt):]  # generate() returns the tokens after the prompt


def test_cli_reports_unverified_and_refuses_to_overwrite(tiny_src, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["convert", "ct2-whisper", str(tiny_src), str(out), "--dtype", "float16"]) == 0
    printed = capsys.readouterr().out
    assert "UNVERIFIED" in printed and "d_model 16, layers 2+2, heads 4, ffn 32, vocab 60, mels 8" in printed
    assert "saved as float16" in printed
    assert main(["convert", "ct2-whisper", str(tiny_src), str(out)]) == 2
    assert "already holds a model" in capsys.readouterr().err


def _convert_modified(tmp_path, change):
    variables, aliases = tiny_variables()
    change(variables, aliases)
    src = write_tiny_model_dir(tmp_path / "src", variables, aliases)
    return convert_ct2_whisper(src, tmp_path / "out")


def test_nonzero_key_bias_is_refused(tmp_path):
    def change(v, a):
        v["encoder/layer_1/self_attention/linear_0/bias"][D + 3] = 0.5

    with pytest.raises(CheckpointError, match=r"key part of 'encoder/layer_1/self_attention/linear_0/bias' is non-zero"):
        _convert_modified(tmp_path, change)


def test_missing_and_unmapped_variables_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing variable 'decoder/layer_1/attention/linear_2/bias'"):
        _convert_modified(tmp_path / "a", lambda v, a: v.pop("decoder/layer_1/attention/linear_2/bias"))
    with pytest.raises(CheckpointError, match=r"not mapped to transformers' Whisper: encoder/extra/weight"):
        _convert_modified(tmp_path / "b", lambda v, a: v.update({"encoder/extra/weight": np.ones(2, np.float16)}))
    with pytest.raises(CheckpointError, match=r"'decoder/pre_norm' is 0, transformers' Whisper needs 1"):
        _convert_modified(tmp_path / "c", lambda v, a: v.update({"decoder/pre_norm": np.array(0, np.int8)}))


def test_wrong_spec_and_missing_tokenizer(tmp_path):
    src = write_tiny_model_dir(tmp_path / "src")
    from comsl.pretrained.ct2_format import write_ct2_model

    variables, aliases = tiny_variables()
    write_ct2_model(src / "model.bin", "TransformerSpec", 1, variables, aliases)
    with pytest.raises(CheckpointError, match="spec is 'TransformerSpec', expected 'WhisperSpec'"):
        convert_ct2_whisper(src, tmp_path / "out")
    write_ct2_model(src / "model.bin", "WhisperSpec", 3, variables, aliases)
    (src / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        convert_ct2_whisper(src, tmp_path / "out")


def test_int8_quantized_weights_and_untied_projection(tmp_path):
    def change(v, a):
        w = v["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32)
        scale = (127 / np.abs(w).max(axis=1)).astype(np.float32)
        v["encoder/layer_0/ffn/linear_0/weight"] = np.round(w * scale[:, None]).astype(np.int8)
        v["encoder/layer_0/ffn/linear_0/weight_scale"] = scale
        a.clear()
        v["decoder/projection/weight"] = (v["decoder/embeddings/weight"] * 2).astype(np.float16)

    summary = _convert_modified(tmp_path, change)
    assert summary.source_dtypes == ["float16", "float32", "int8"] and summary.dims["tie_word_embeddings"] is False
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "out")
    variables, _ = tiny_variables()
    w = variables["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32)
    assert np.abs(model.model.encoder.layers[0].fc1.weight.detach().numpy() - w).max() <= np.abs(w).max() / 254 + 1e-6
    assert torch.equal(model.proj_out.weight, 2 * model.model.decoder.embed_tokens.weight)
