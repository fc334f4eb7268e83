#!/usr/bin/env python3
"""PyTorch/transformers reference for width pruning (issue 16), on the embedded model.

What it computes, with PyTorch and transformers only (versions pinned in
scripts/width_reference.requirements.txt), so that the runner can be checked against it:

1. Minitron activation importance, as NVIDIA ModelOpt defines it, from forward hooks on
   LlamaForCausalLM over the calibration ids of ../shared/reference (first ROWS rows):
   - MLP neuron: input of `down_proj`; attention: input of `o_proj`, per channel, then the
     L2 norm over each head's channels (head), and over each KV group's heads (group);
     embedding channel: output of `input_layernorm` and of `post_attention_layernorm` of
     every layer, one score per norm, summed.
   - Per channel: |a| aggregated over the tokens of a row (mean, or l2 = sqrt of the sum of
     squares), then over rows (l2 or mean). Both (mean, l2) (ModelOpt's) and (l2, mean).
2. Width pruning by those scores (top-k per layer, ties to the lower index, kept channels in
   their original order; KV groups with their query heads, the most important heads per group)
   for each VARIANT below, and the pruned model's last-position logits on the 4 prompts of
   ../shared/reference/logits.safetensors: top-64 (id, logit) and the log-sum-exp.
3. With --runner-model DIR (a model the runner pruned with the same targets): loads it with
   transformers and prints the largest difference of its logits from the reference's.

Output: one safetensors file (f32 tensors; ids as int64) read by runner/tests/width_prune.rs:
the calibration ids, the prompts, both importances, and per variant its shape
[hidden, intermediate, heads, kv heads] and the pruned model's logits.

Usage: python scripts/width_reference.py --model SMOLLM2_F32_DIR --out FILE
           [--shared ../shared] [--runner-model VARIANT=DIR ...]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

ROWS = 16
TOKENS = 128
TOP = 64
VARIANTS = {
    # name: (intermediate_size, num_key_value_heads, heads_per_group, hidden_size)
    "mlp_kv": (1152, 2, None, None),
    "all": (1152, 2, 2, 480),
}


def aggregate(acts, lengths, seq, batch):
    """acts [b, t, c] -> per-row sequence aggregate [b, c] (padding excluded)."""
    out = []
    for r, n in enumerate(lengths):
        a = acts[r, :n].abs().double()
        out.append(a.mean(0) if seq == "mean" else a.pow(2).sum(0).sqrt())
    return torch.stack(out)


class Importance:
    def __init__(self, cfg, seq, batch):
        self.cfg, self.seq, self.batch = cfg, seq, batch
        self.sums = {}
        self.rows = 0

    def add(self, key, acts, lengths):
        v = aggregate(acts, lengths, self.seq, self.batch)
        v = v.sum(0) if self.batch == "mean" else v.pow(2).sum(0)
        self.sums[key] = self.sums.get(key, 0) + v

    def finish(self):
        f = (lambda s: s / self.rows) if self.batch == "mean" else (lambda s: s.sqrt())
        c = self.cfg
        per_group = c.num_attention_heads // c.num_key_value_heads
        out = {"hidden": torch.zeros(c.hidden_size, dtype=torch.float64)}
        for l in range(c.num_hidden_layers):
            out["hidden"] += f(self.sums[(l, "in_norm")]) + f(self.sums[(l, "post_norm")])
            ch = f(self.sums[(l, "attn")]).view(c.num_attention_heads, c.head_dim)
            heads = ch.pow(2).sum(1).sqrt()
            out[f"layers.{l}.mlp"] = f(self.sums[(l, "mlp")])
            out[f"layers.{l}.heads"] = heads
            out[f"layers.{l}.groups"] = heads.view(-1, per_group).pow(2).sum(1).sqrt()
        return out


def importance(model, ids, seq, batch):
    cfg = model.config
    imp = Importance(cfg, seq, batch)
    lengths = []  # of the rows of the batch being run (no padding: all full)
    handles = []
    for l, layer in enumerate(model.model.layers):
        def pre(key):
            return lambda mod, args: imp.add(key, args[0].detach(), lengths)

        def post(key):
            return lambda mod, args, out: imp.add(key, out.detach(), lengths)

        handles += [
            layer.mlp.down_proj.register_forward_pre_hook(pre((l, "mlp"))),
            layer.self_attn.o_proj.register_forward_pre_hook(pre((l, "attn"))),
            layer.input_layernorm.register_forward_hook(post((l, "in_norm"))),
            layer.post_attention_layernorm.register_forward_hook(post((l, "post_norm"))),
        ]
    with torch.no_grad():
        for r in range(0, ids.shape[0], 4):
            batch = ids[r : r + 4]
            lengths[:] = [batch.shape[1]] * batch.shape[0]
            model(input_ids=batch)
    imp.rows = ids.shape[0]
    for h in handles:
        h.remove()
    return imp.finish()


def top_k(scores, k):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def prune(model, imp, inter, kv, per_group_keep, hidden):
    c = model.config
    per_group = c.num_attention_heads // c.num_key_value_heads
    inter = inter or c.intermediate_size
    kv = kv or c.num_key_value_heads
    per_group_keep = per_group_keep or per_group
    hidden = hidden or c.hidden_size
    d = c.head_dim
    H = torch.tensor(top_k(imp["hidden"], hidden))
    sd = model.state_dict()
    new = {}

    def rows(units, w):
        return torch.tensor([u * w + j for u in units for j in range(w)])

    for name, t in sd.items():
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            new[name] = t[:, H]
        elif name == "model.norm.weight":
            new[name] = t[H]
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}."
        groups = top_k(imp[f"layers.{l}.groups"], kv)
        heads = [
            g * per_group + h
            for g in groups
            for h in top_k(imp[f"layers.{l}.heads"][g * per_group : (g + 1) * per_group], per_group_keep)
        ]
        M = torch.tensor(top_k(imp[f"layers.{l}.mlp"], inter))
        Q, KV = rows(heads, d), rows(groups, d)
        for n in ("input_layernorm", "post_attention_layernorm"):
            new[p + n + ".weight"] = sd[p + n + ".weight"][H]
        new[p + "self_attn.q_proj.weight"] = sd[p + "self_attn.q_proj.weight"][Q][:, H]
        new[p + "self_attn.k_proj.weight"] = sd[p + "self_attn.k_proj.weight"][KV][:, H]
        new[p + "self_attn.v_proj.weight"] = sd[p + "self_attn.v_proj.weight"][KV][:, H]
        new[p + "self_attn.o_proj.weight"] = sd[p + "self_attn.o_proj.weight"][H][:, Q]
        new[p + "mlp.gate_proj.weight"] = sd[p + "mlp.gate_proj.weight"][M][:, H]
        new[p + "mlp.up_proj.weight"] = sd[p + "mlp.up_proj.weight"][M][:, H]
        new[p + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"][H][:, M]
    cfg = c.to_dict()
    cfg.update(
        hidden_size=hidden,
        intermediate_size=inter,
        num_key_value_heads=kv,
        num_attention_heads=kv * per_group_keep,
        head_dim=d,
    )
    pruned = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    missing, unexpected = pruned.load_state_dict(new, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)
    pruned.tie_weights()
    return pruned


def last_logits(model, prompts):
    with torch.no_grad():
        return [model(input_ids=p[None]).logits[0, -1].double() for p in prompts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="f32 HF directory of SmolLM2-135M-Instruct")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    ap.add_argument("--runner-model", action="append", default=[], metavar="VARIANT=DIR")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    ref = Path(args.shared) / "reference"
    ids = load_file(str(ref / "calibration_ids.safetensors"))["input_ids"][:ROWS, :TOKENS]
    logits_ref = load_file(str(ref / "logits.safetensors"))
    # The 4 prompts of the logits reference (c1, c2, p1, p2), in name order.
    prompts = [logits_ref[k] for k in sorted(logits_ref) if k.endswith("/input_ids")]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    out = {"calibration_ids": ids.clone()}
    for i, p in enumerate(prompts):
        out[f"prompt.{i}"] = p.clone().long()
    imps = {}
    for seq, batch in (("mean", "l2"), ("l2", "mean")):
        imp = importance(model, ids, seq, batch)
        imps[(seq, batch)] = imp
        for k, v in imp.items():
            out[f"importance.{seq}_{batch}.{k}"] = v.float()
    imp = imps[("mean", "l2")]
    report = {}
    for name, targets in VARIANTS.items():
        pruned = prune(model, imp, *targets)
        c = pruned.config
        out[f"variant.{name}.shape"] = torch.tensor(
            [c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads]
        )
        for i, lg in enumerate(last_logits(pruned, prompts)):
            top = lg.topk(TOP)
            out[f"variant.{name}.prompt.{i}.top_ids"] = top.indices.long()
            out[f"variant.{name}.prompt.{i}.top_logits"] = top.values.float()
            out[f"variant.{name}.prompt.{i}.logsumexp"] = lg.logsumexp(0).float().reshape(1)
        report[name] = {"parameters": sum(p.numel() for p in pruned.parameters())}
        for spec in args.runner_model:
            v, _, d = spec.partition("=")
            if v != name:
                continue
            theirs = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            diffs = [
                (a - b).abs().max().item()
                for a, b in zip(last_logits(theirs, prompts), last_logits(pruned, prompts))
            ]
            report[name]["runner_model"] = d
            report[name]["runner_max_abs_logit_diff"] = max(diffs)
    save_file({k: v.contiguous() for k, v in out.items()}, args.out, metadata={
        "variants": json.dumps(VARIANTS),
        "rows": str(ROWS),
        "tokens": str(TOKENS),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    })
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
