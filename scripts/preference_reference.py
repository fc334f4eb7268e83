#!/usr/bin/env python3
"""PyTorch reference for the preference losses (issue 17): DPO, conservative DPO, IPO, hinge
and SPIN, on hand-made sequence log-probabilities.

The formulas are TRL's `DPOTrainer.dpo_loss` (trl/trainer/dpo_trainer.py):

    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    sigmoid: -logsigmoid(beta * logits) * (1 - label_smoothing)
             - logsigmoid(-beta * logits) * label_smoothing
    hinge:   relu(1 - beta * logits)
    ipo:     (logits - 1 / (2 * beta)) ** 2      (log-probabilities averaged over tokens)
    chosen_rewards = beta * (policy_chosen - ref_chosen), likewise rejected; loss = mean

and SPIN's `spin_loss` (uclaml/SPIN, spin/alignment/trainer.py), which is the sigmoid (or
hinge) loss with the data set's answer as "real" (chosen) and the model's own as "generated"
(rejected). Gradients with respect to the policy log-probabilities come from torch.autograd in
float64. For IPO the averaging is part of the graph: the inputs are per-token log-probability
sums and token counts, as in TRL's `concatenated_forward` (`all_logps / size_completion`).

Output: JSON read by runner/tests/preference.rs, one entry per case with its inputs, the mean
mean loss (`mean_loss`), the per-pair `losses`, the rewards and d(mean loss)/d(policy sums).

Usage: python scripts/preference_reference.py --out runner/tests/fixtures/preference_reference.json
Versions: scripts/preference_reference.requirements.txt.
"""

import argparse
import json

import torch
import torch.nn.functional as F

# Hand-made cases: per pair (policy chosen sum, policy rejected sum, reference chosen sum,
# reference rejected sum, chosen tokens, rejected tokens).
PAIRS = [
    (-12.5, -14.0, -13.0, -13.25, 7, 9),
    (-40.0, -31.5, -38.0, -33.0, 20, 16),
    (-3.0, -5.0, -3.0, -5.0, 3, 4),
    (-80.25, -95.5, -85.0, -90.0, 41, 50),
    (-1.0, -60.0, -2.0, -20.0, 2, 30),
]

CASES = [
    {"name": "dpo-sigmoid", "loss": "sigmoid", "beta": 0.1, "label_smoothing": 0.0},
    {"name": "dpo-sigmoid-beta0.5", "loss": "sigmoid", "beta": 0.5, "label_smoothing": 0.0},
    {"name": "cdpo", "loss": "sigmoid", "beta": 0.1, "label_smoothing": 0.2},
    {"name": "hinge", "loss": "hinge", "beta": 0.3, "label_smoothing": 0.0},
    {"name": "ipo", "loss": "ipo", "beta": 0.1, "label_smoothing": 0.0},
    {"name": "spin-sigmoid", "loss": "sigmoid", "beta": 0.1, "label_smoothing": 0.0},
]


def dpo_loss(pc, pr, rc, rr, loss_type, beta, label_smoothing):
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(loss_type)
    chosen_rewards = beta * (pc - rc).detach()
    rejected_rewards = beta * (pr - rr).detach()
    return losses, chosen_rewards, rejected_rewards


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t = torch.tensor(PAIRS, dtype=torch.float64)
    out = {"torch": torch.__version__, "pairs": PAIRS, "cases": []}
    for case in CASES:
        pc = t[:, 0].clone().requires_grad_(True)
        pr = t[:, 1].clone().requires_grad_(True)
        rc, rr, nc, nr = t[:, 2], t[:, 3], t[:, 4], t[:, 5]
        if case["loss"] == "ipo":
            args_ = (pc / nc, pr / nr, rc / nc, rr / nr)
        else:
            args_ = (pc, pr, rc, rr)
        losses, cr, rj = dpo_loss(*args_, case["loss"], case["beta"], case["label_smoothing"])
        loss = losses.mean()
        loss.backward()
        out["cases"].append(
            {
                **case,
                "losses": losses.detach().tolist(),
                "mean_loss": loss.item(),
                "chosen_rewards": cr.tolist(),
                "rejected_rewards": rj.tolist(),
                "grad_policy_chosen": pc.grad.tolist(),
                "grad_policy_rejected": pr.grad.tolist(),
            }
        )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
