"""Does CPU attention over a padded batch avoid its masked slow path with nested (jagged) tensors or packing?

``python benchmarks/attention_mask.py [--quick] [--precision fp32|bf16]``. One self-attention call
(``F.scaled_dot_product_attention``, forward + backward) over a batch of CoVoST-like speech-encoder
lengths (d 256, 4 heads, 50 positions a second), five ways:

* ``nomask``: the batch padded to its longest, no mask (wrong for padded rows; the fused kernel's speed);
* ``mask``: padded, with the boolean padding mask (what the model runs today);
* ``bias``: padded, with an additive float mask (transformers' eager-style bias);
* ``jagged``: a nested tensor of the real lengths (``torch.nested``, ``layout=torch.jagged``);
* ``loop``: each utterance alone at its real length (what packing into per-sequence calls costs).

Interleaved, process CPU time, best of repeats. Last line: ``mask_vs_nomask=X jagged_vs_mask=Y
loop_vs_mask=Z`` (time ratios; < 1 means faster than the second).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import covost_like  # noqa: E402


def make_inputs(lengths: list[int], d: int, heads: int, dtype) -> dict:
    width = max(lengths)
    b = len(lengths)
    pad = torch.randn(b, heads, width, d // heads, dtype=dtype)
    keep = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    mask = keep[:, None, None, :]  # keys only, as an encoder's padding mask
    bias = torch.zeros(b, 1, 1, width, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    seqs = [torch.randn(n, heads, d // heads, dtype=dtype) for n in lengths]
    return {"pad": pad, "mask": mask, "bias": bias, "seqs": seqs}


def run(name: str, x: dict) -> None:
    if name == "jagged":
        nt = torch.nested.nested_tensor([s.clone() for s in x["seqs"]], layout=torch.jagged,
                                        requires_grad=True).transpose(1, 2)  # (B, H, j, dh)
        out = F.scaled_dot_product_attention(nt, nt, nt)
        out.values().sum().backward()
        return
    if name == "loop":
        for s in x["seqs"]:
            q = s.transpose(0, 1)[None].clone().requires_grad_()
            F.scaled_dot_product_attention(q, q, q).sum().backward()
        return
    q = x["pad"].clone().requires_grad_()
    mask = {"nomask": None, "mask": x["mask"], "bias": x["bias"]}[name]
    F.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 batches x 2 repeats instead of 4 x 5")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    n_batches, repeats = (2, 2) if args.quick else (4, 5)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    corpus = covost_like(n_batches * args.batch, seed=6)
    inputs = [make_inputs([int(f) // 2 for f in corpus.frames[k * args.batch:(k + 1) * args.batch]], 256, 4, dtype)
              for k in range(n_batches)]
    names = ["nomask", "mask", "bias", "jagged", "loop"]
    available = list(names)
    try:
        run("jagged", inputs[0])
    except Exception as err:  # noqa: BLE001  (not every torch build supports jagged SDPA on CPU)
        print(f"jagged: not supported here ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
        available.remove("jagged")
    best = {n: float("inf") for n in available}
    for _ in range(repeats):
        for name in available:
            c0 = time.process_time()
            for x in inputs:
                run(name, x)
            best[name] = min(best[name], time.process_time() - c0)
    real = sum(len(s) for x in inputs for s in x["seqs"])
    padded = sum(x["pad"].shape[0] * x["pad"].shape[2] for x in inputs)
    print(f"{n_batches} batches of {args.batch}, {args.precision}, padded/real positions {padded / real:.2f}")
    for name in available:
        print(f"{name:8s} cpu {best[name]:8.3f} s")
    result = {"mask_vs_nomask": best["mask"] / best["nomask"], "loop_vs_mask": best["loop"] / best["mask"]}
    if "jagged" in best:
        result["jagged_vs_mask"] = best["jagged"] / best["mask"]
    print(" ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
