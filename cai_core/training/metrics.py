"""Which curves matter per run kind, and health checks on them (the page charts what this returns).

TRL names its logs differently per trainer (PPO logs "lr", the others "learning_rate"; DPO
"rewards/margins", the reward trainer "margin"); the groups below list every name a kind may log,
and a chart shows the ones present.
"""
from __future__ import annotations

import math

COMMON = [
    ("Loss", ["loss", "eval_loss"]),
    ("Learning rate", ["learning_rate", "lr"]),
]
KIND_GROUPS = {
    "sft": [("Token accuracy", ["mean_token_accuracy", "eval_mean_token_accuracy"]),
            ("Entropy", ["entropy"])],
    "reward": [("Accuracy (chosen scored above rejected)", ["accuracy", "eval_accuracy"]),
               ("Margin (chosen - rejected score)", ["margin", "eval_margin"]),
               ("Mean reward", ["mean_reward", "eval_mean_reward"]),
               ("Soft labels: |sigmoid(margin) - p_chosen| and mean p_chosen",
                ["soft_error", "eval_soft_error", "soft_target", "eval_soft_target"])],
    "dpo": [("Reward margins", ["rewards/margins", "eval_rewards/margins"]),
            ("Reward accuracies", ["rewards/accuracies", "eval_rewards/accuracies"]),
            ("Implicit rewards", ["rewards/chosen", "rewards/rejected"])],
    "ppo": [("Reward (reward-model score)", ["objective/scores", "objective/rlhf_reward"]),
            ("KL to the starting policy", ["objective/kl"]),
            ("Entropy", ["objective/entropy", "policy/entropy_avg"]),
            ("Value loss", ["loss/value_avg"]),
            ("Policy loss", ["loss/policy_avg"]),
            ("Response length (probe answers, tokens)", ["probe/response_tokens"])],
    "rloo": [("Reward", ["reward"]), ("KL", ["kl"]), ("Entropy", ["entropy"]),
             ("Response length (tokens)", ["completions/mean_length", "probe/response_tokens"])],
    "grpo": [("Reward", ["reward", "reward_std"]), ("KL", ["kl"]), ("Entropy", ["entropy"]),
             ("Response length (tokens)", ["completions/mean_length", "probe/response_tokens"])],
}
SYSTEM = [
    ("Memory (MB)", ["sys/cpu_rss_mb", "sys/gpu_mem_mb"]),
    ("Throughput", ["sys/steps_per_s", "sys/tokens_per_s"]),
]
KL_KEYS = ("objective/kl", "kl")
KL_EXPLODING = 10.0  # nats per answer: the policy has drifted far from where it started


def chart_groups(kind: str) -> list[tuple[str, list[str]]]:
    return COMMON + KIND_GROUPS.get(kind, []) + SYSTEM


def series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, skipping steps that did not log it."""
    steps, values = [], []
    for m in metrics:
        v = m.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(m["step"])
            values.append(float(v))
    return steps, values


def metric_keys(metrics: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for m in metrics:
        for k, v in m.items():
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def latest(metrics: list[dict]) -> dict:
    """Last value of every metric."""
    out: dict = {}
    for m in metrics:
        out.update({k: v for k, v in m.items() if v is not None})
    return out


def kl_warning(metrics: list[dict]) -> str | None:
    """A warning when the KL estimate goes clearly negative (a sampling/estimator problem) or explodes."""
    for key in KL_KEYS:
        _, values = series(metrics, key)
        if not values:
            continue
        last = values[-1]
        if last < -0.5:
            return (f"KL is negative ({last:.3g}): the k1 estimator went below zero, which usually means too few "
                    "samples, a temperature mismatch or a broken reference; try kl_estimator k3 or more samples.")
        if last > KL_EXPLODING:
            return (f"KL is exploding ({last:.3g} > {KL_EXPLODING:g}): the policy is drifting far from its start; "
                    "raise kl_coef or lower the learning rate.")
    return None
