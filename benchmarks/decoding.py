"""Beam-5 batched decoding: comsl's beam search vs transformers' ``generate``, same model, same inputs.

``python benchmarks/decoding.py [--quick]``. Both decode the same encoder states (the speech blocks and
text encoder run once, outside the timing) and must return identical token ids (asserted). The model is
the benchmark composite with random weights made to behave like a trained one: the decoder's final layer
norm is scaled (confident next-token distributions) and ``</s>`` gets a logit bias, so hypotheses end
after a varying number of tokens instead of all running to the cap. Both are run in fp32 and, as a
second pair, in bf16 (bf16 weights and encoder states, as a bf16-trained model decodes its dev set;
autocast over float32 weights would cast every weight at every step). Identical tokens are asserted in
fp32; in bf16 the share of identical hypotheses is printed: this random model's hypotheses end where the
``</s>`` logit is a near-tie, which bf16 rounding in differently shaped matmuls (our beam layout vs
generate's) may decide either way. Runs are interleaved. Last line: ``decode_speedup=X
decode_speedup_bf16=Y`` (generate / ours, process CPU time; the wall-time ratios are printed too).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EOS, PAD, bench_model, covost_like, interleaved, make_batch  # noqa: E402

from comsl.models.beam_search import beam_search  # noqa: E402

PAIRS = {"fp32": ("ours", "generate"), "bf16": ("ours_bf16", "generate_bf16")}


def make_confident(model, logit_scale: float, eos_bias: float, cross_scale: float) -> None:
    dec = model.text_model.model.decoder
    with torch.no_grad():
        dec.layer_norm.weight.mul_(logit_scale)
        dec.layer_norm.bias.mul_(logit_scale)
        for layer in dec.layers:
            layer.encoder_attn.out_proj.weight.mul_(cross_scale)
        model.text_model.final_logits_bias[0, EOS] = eos_bias


def _identical_rows(a_batches, b_batches) -> tuple[int, int]:
    """(identical hypotheses, all hypotheses) of two runs' token-id batches (trailing padding ignored)."""
    same = total = 0
    for a, b in zip(a_batches, b_batches):
        for x, y in zip(a, b):
            x, y = x[x != PAD], y[y != PAD]
            same += x.shape == y.shape and bool(torch.equal(x, y))
            total += 1
    return same, total


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-beams", type=int, default=5)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--logit-scale", type=float, default=6.0)
    p.add_argument("--eos-bias", type=float, default=6.6)
    p.add_argument("--cross-scale", type=float, default=1.0)
    args = p.parse_args(argv)
    n_batches, repeats = (2, 2) if args.quick else (6, 3)

    model = bench_model().eval()
    make_confident(model, args.logit_scale, args.eos_bias, args.cross_scale)
    tm, tc = model.text_model, model.config.text_config
    corpus = covost_like(n_batches * args.batch_size, seed=1)
    inputs = []
    with torch.no_grad():
        for k in range(n_batches):
            b = make_batch(corpus, list(range(k * args.batch_size, (k + 1) * args.batch_size)), tc.vocab_size, seed=k)
            embeds, mask = model.speech_inputs_embeds(model.encode_speech(b["speech"], b["speech_mask"]),
                                                      b["src_lang_ids"])
            enc = model.encode_embeds(embeds * 4, mask).last_hidden_state
            inputs.append((enc, mask))

    kw = dict(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, length_penalty=1.0)
    names = [name for pair in PAIRS.values() for name in pair]
    outputs: dict[str, list] = {name: [] for name in names}

    low = copy.deepcopy(tm).to(torch.bfloat16)

    def run(name, item):
        enc, mask = item
        tm = low if name.endswith("_bf16") else model.text_model
        enc = enc.to(torch.bfloat16) if name.endswith("_bf16") else enc
        with torch.no_grad():
            if name.startswith("ours"):
                out = beam_search(tm, enc, mask, decoder_start_id=EOS, forced_bos_id=5, eos_id=EOS, pad_id=PAD,
                                  forced_eos_id=tm.generation_config.forced_eos_token_id, **kw)
            else:
                out = tm.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=mask,
                                  decoder_start_token_id=EOS, forced_bos_token_id=5, bos_token_id=0,
                                  eos_token_id=EOS, pad_token_id=PAD, early_stopping=True, do_sample=False, **kw)
        outputs[name].append(out)

    for name in names:
        run(name, inputs[0])  # warm-up
    outputs = {name: [] for name in names}
    cpu: dict[str, float] = {}
    times = interleaved({name: inputs * repeats for name in names}, run, cpu)
    ours, gen = PAIRS["fp32"]
    for a, b in zip(outputs[ours], outputs[gen]):
        assert a.shape == b.shape and torch.equal(a, b), "beam search outputs differ from generate (fp32)"
    same, total = _identical_rows(outputs["ours_bf16"], outputs["generate_bf16"])
    lengths = torch.cat([(o != PAD).sum(1) - 1 for o in outputs["ours"][:n_batches]]).tolist()
    n_sent = n_batches * args.batch_size * repeats
    print(f"{n_sent} sentences ({n_batches} batches of {args.batch_size} x {repeats} repeats), beam {args.num_beams}, "
          f"max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    print(f"generated lengths: min {min(lengths)} mean {sum(lengths) / len(lengths):.1f} max {max(lengths)}")
    print(f"outputs identical: fp32 all; bf16 {same} of {total} hypotheses (near-tie endings, see the docstring)")
    for name in names:
        print(f"{name:14s} wall {times[name]:8.2f} s  {n_sent / times[name]:8.2f} sentences/s   cpu {cpu[name]:8.2f} s")
    result = {}
    for precision, (ours, gen) in PAIRS.items():
        print(f"wall-time speedup {precision}: {times[gen] / times[ours]:.2f}")
        result["decode_speedup" + ("" if precision == "fp32" else "_bf16")] = cpu[gen] / cpu[ours]
    print(" ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
