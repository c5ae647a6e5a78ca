"""PPO on a forest's constants: the trees' outputs are the policy logits, a small MLP over the
same features is the critic, and a soft expert term pulls the forest toward the teacher.

Loss per minibatch::

    pg_coef * clip_loss + vf_coef * value_loss - ent_coef * entropy
        + lambda * cross_entropy(forest logits, teacher action on the same observation)

where ``lambda`` goes linearly from ``expert_coef`` to ``expert_coef_final`` over the run
(observations whose teacher action is unknown are left out of that term). Only the forest's
constants and the critic are trained; the structure stays fixed. Rollouts use ``n_envs``
feature envs (see :mod:`gplearn_custom.envs`), stepped in turn, each game seeded from the
run's seed; a time-limit truncation bootstraps from the critic.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gplearn_custom.envs import EnvFactory
from gplearn_custom.params import param, require
from gplearn_custom.torch_forest import TorchForest
from see.tree import Forest, Token

#: Logits are clamped to +-LOGIT_LIMIT in the loss (a "never" tree is a constant -1e6).
LOGIT_LIMIT = 1e6


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread inside the block. The work here is batches of a few observations:
    more threads only contend (measured ten times slower on a busy 2-core machine), and one
    thread gives the same arithmetic in every process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings for tuning constants (``n_timesteps`` env steps per run); the documented
    fields are options of the stages that compose this part."""

    n_timesteps: int = 5000
    n_envs: int = param(4, "PPO: parallel games")
    n_steps: int = param(128, "PPO: steps per game per rollout")
    batch_size: int = param(128, "PPO: minibatch size")
    n_epochs: int = param(4, "PPO: epochs per rollout")
    learning_rate: float = param(0.01, "PPO: Adam learning rate of the constants")
    critic_learning_rate: float = param(1e-3, "PPO: Adam learning rate of the critic")
    gamma: float = param(0.99, "PPO: discount")
    gae_lambda: float = param(0.95, "PPO: GAE lambda")
    clip_range: float = param(0.2, "PPO: clip range")
    ent_coef: float = param(0.01, "PPO: entropy coefficient")
    vf_coef: float = param(0.5, "PPO: value loss coefficient")
    pg_coef: float = 1.0
    expert_coef: float = param(0.0, "lambda: weight of the cross-entropy to the teacher's "
                                    "action in the PPO loss (0: unguided, reward only)")
    expert_coef_final: float = param(0.0, "lambda at the end of each PPO run (linear anneal)")
    max_grad_norm: float = param(0.5, "PPO: gradient clipping (constants and critic apart)")
    critic_hidden: tuple[int, ...] = (64, 64)
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"PPO {name} must be at least 1")
        if min(self.expert_coef, self.expert_coef_final, self.ent_coef, self.vf_coef,
               self.pg_coef) < 0:
            raise ValueError("PPO loss coefficients must be >= 0")
        require([
            (self.learning_rate > 0 and self.critic_learning_rate > 0,
             "PPO learning_rate and critic_learning_rate must be > 0"),
            (0 < self.gamma <= 1, "PPO gamma must be in (0, 1]"),
            (0 <= self.gae_lambda <= 1, "PPO gae_lambda must be in [0, 1]"),
            (self.clip_range > 0, "PPO clip_range must be > 0"),
            (self.max_grad_norm > 0, "PPO max_grad_norm must be > 0"),
        ])

    @property
    def rollout_size(self) -> int:
        return self.n_envs * self.n_steps

    @property
    def total_updates(self) -> int:
        return max(1, math.ceil(self.n_timesteps / self.rollout_size))


class Critic(nn.Module):
    """State value from the same features: an MLP with tanh activations."""

    def __init__(self, n_features: int, hidden: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B,)."""
        return self.net(X).squeeze(-1)


@dataclass
class UpdateStats:
    """What one PPO update did; returns are those of games finished during its rollout."""

    update: int
    env_steps: int
    mean_return: float | None
    episodes: int
    agreement: float | None
    entropy: float
    pg_loss: float
    value_loss: float
    expert_loss: float | None
    expert_coef: float
    approx_kl: float
    clip_fraction: float
    seconds: float
    constants: list[float]


class ConstantPPO:
    """PPO whose actor is a :class:`TorchForest`; :meth:`update` collects and trains once."""

    def __init__(self, trees: Sequence[Sequence[Token]], make_env: EnvFactory, cfg: PPOConfig,
                 seed: int = 0, device: str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.envs = [make_env(i) for i in range(cfg.n_envs)]
        n_features = int(np.prod(self.envs[0].observation_space.shape))
        self.actor = TorchForest(trees).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.critic = Critic(n_features, cfg.critic_hidden).to(self.device, torch.float64)
        self.optimizer = torch.optim.Adam([
            {"params": [self.actor.constants], "lr": cfg.learning_rate},
            {"params": list(self.critic.parameters()), "lr": cfg.critic_learning_rate}])
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.updates = 0
        self.episode_returns: list[tuple[int, float]] = []   # (env steps at the end, return)
        self._obs: np.ndarray | None = None                   # (N, F)
        self._teacher = np.full(cfg.n_envs, -1, dtype=np.int64)
        self._running = np.zeros(cfg.n_envs)
        self._steps = np.zeros(cfg.n_envs, dtype=np.int64)

    @property
    def expert_coef(self) -> float:
        """lambda now: linear from ``expert_coef`` to ``expert_coef_final`` over the updates."""
        progress = min(self.updates / self.cfg.total_updates, 1.0)
        return self.cfg.expert_coef + (self.cfg.expert_coef_final - self.cfg.expert_coef) * \
            progress

    @property
    def done(self) -> bool:
        return self.updates >= self.cfg.total_updates

    def trees(self) -> Forest:
        return self.actor.trees()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float64), device=self.device)

    def _reset(self, i: int) -> np.ndarray:
        obs, info = self.envs[i].reset(seed=int(self.rng.integers(2**31 - 1)))
        self._teacher[i] = info.get("teacher_action", -1)
        self._running[i], self._steps[i] = 0.0, 0
        return np.asarray(obs, dtype=np.float64)

    def _collect(self) -> dict[str, torch.Tensor]:
        """One rollout of ``n_steps`` per env, with advantages and returns (GAE)."""
        cfg = self.cfg
        if self._obs is None:
            self._obs = np.stack([self._reset(i) for i in range(cfg.n_envs)])
        T, N = cfg.n_steps, cfg.n_envs
        obs = torch.zeros(T, N, self._obs.shape[1], dtype=torch.float64)   # (T, N, F)
        actions = torch.zeros(T, N, dtype=torch.long)                       # (T, N)
        logp = torch.zeros(T, N, dtype=torch.float64)
        values = torch.zeros(T, N, dtype=torch.float64)
        rewards = torch.zeros(T, N, dtype=torch.float64)
        ends = torch.zeros(T, N, dtype=torch.float64)
        teacher = torch.zeros(T, N, dtype=torch.long)
        greedy = torch.zeros(T, N, dtype=torch.long)
        for t in range(T):
            x = self._tensor(self._obs)                                     # (N, F)
            with torch.no_grad():
                logits = self.actor(x).clamp(-LOGIT_LIMIT, LOGIT_LIMIT)      # (N, A)
                value = self.critic(x)                                       # (N,)
            log_probs = F.log_softmax(logits, dim=1).cpu()                   # (N, A)
            a = torch.multinomial(log_probs.exp(), 1, generator=self.generator).squeeze(1)
            obs[t], actions[t], values[t] = x.cpu(), a, value.cpu()
            logp[t] = log_probs.gather(1, a[:, None]).squeeze(1)
            teacher[t] = torch.from_numpy(self._teacher)
            greedy[t] = logits.argmax(dim=1).cpu()
            for i, env in enumerate(self.envs):
                next_obs, reward, terminated, truncated, info = env.step(int(a[i]))
                self._running[i] += reward
                self._steps[i] += 1
                limit = cfg.max_episode_steps
                truncated = truncated or (limit is not None and self._steps[i] >= limit)
                if truncated and not terminated:
                    with torch.no_grad():
                        reward += cfg.gamma * float(self.critic(self._tensor(next_obs)[None])[0])
                rewards[t, i] = reward
                if terminated or truncated:
                    ends[t, i] = 1.0
                    self.episode_returns.append((self.env_steps + (t + 1) * N,
                                                 float(self._running[i])))
                    self._obs[i] = self._reset(i)
                else:
                    self._obs[i] = next_obs
                    self._teacher[i] = info.get("teacher_action", -1)
        with torch.no_grad():
            last = self.critic(self._tensor(self._obs)).cpu()                # (N,)
        advantages = torch.zeros(T, N, dtype=torch.float64)
        gae = torch.zeros(N, dtype=torch.float64)
        for t in reversed(range(T)):
            next_value = last if t == T - 1 else values[t + 1]
            keep = 1.0 - ends[t]
            delta = rewards[t] + cfg.gamma * next_value * keep - values[t]
            gae = delta + cfg.gamma * cfg.gae_lambda * keep * gae
            advantages[t] = gae
        self.env_steps += T * N
        return {"obs": obs.flatten(0, 1), "actions": actions.flatten(), "logp": logp.flatten(),
                "advantages": advantages.flatten(), "returns": (advantages + values).flatten(),
                "teacher": teacher.flatten(), "greedy": greedy.flatten()}

    def update(self) -> UpdateStats:
        """Collect one rollout and train on it for ``n_epochs`` epochs (one torch thread)."""
        with one_thread():
            return self._update()

    def _update(self) -> UpdateStats:
        cfg = self.cfg
        t0 = time.perf_counter()
        episodes_before = len(self.episode_returns)
        lam = self.expert_coef
        data = {k: v.to(self.device) for k, v in self._collect().items()}
        known = data["teacher"] >= 0
        agreement = float((data["greedy"][known] == data["teacher"][known]).double().mean()) \
            if known.any() else None
        total = data["actions"].shape[0]
        sums: dict[str, float] = {"pg": 0.0, "value": 0.0, "entropy": 0.0, "expert": 0.0,
                                  "kl": 0.0, "clip": 0.0}
        batches = 0
        for _ in range(cfg.n_epochs):
            order = torch.randperm(total, generator=self.generator).to(self.device)
            for start in range(0, total, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]                    # (b,)
                logits = self.actor(data["obs"][idx]).clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
                log_probs = F.log_softmax(logits, dim=1)                     # (b, A)
                new_logp = log_probs.gather(1, data["actions"][idx, None]).squeeze(1)
                entropy = -(log_probs.exp() * log_probs).sum(dim=1).mean()
                adv = data["advantages"][idx]
                if adv.numel() > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                log_ratio = new_logp - data["logp"][idx]
                ratio = log_ratio.exp()
                pg_loss = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip_range,
                                                              1 + cfg.clip_range) * adv).mean()
                value_loss = (self.critic(data["obs"][idx]) - data["returns"][idx]).pow(2).mean()
                loss = cfg.pg_coef * pg_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
                mask = known[idx]
                if lam > 0 and mask.any():
                    expert = F.cross_entropy(logits[mask], data["teacher"][idx][mask])
                    loss = loss + lam * expert
                    sums["expert"] += float(expert.detach())
                if not torch.isfinite(loss):
                    continue
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_([self.actor.constants], cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    sums["kl"] += float(((ratio - 1) - log_ratio).mean())
                    sums["clip"] += float(((ratio - 1).abs() > cfg.clip_range).double().mean())
                sums["pg"] += float(pg_loss.detach())
                sums["value"] += float(value_loss.detach())
                sums["entropy"] += float(entropy.detach())
                batches += 1
        self.updates += 1
        finished = [r for _, r in self.episode_returns[episodes_before:]]
        n = max(batches, 1)
        return UpdateStats(
            update=self.updates, env_steps=self.env_steps,
            mean_return=float(np.mean(finished)) if finished else None, episodes=len(finished),
            agreement=agreement, entropy=sums["entropy"] / n, pg_loss=sums["pg"] / n,
            value_loss=sums["value"] / n,
            expert_loss=sums["expert"] / n if lam > 0 and known.any() else None,
            expert_coef=lam, approx_kl=sums["kl"] / n, clip_fraction=sums["clip"] / n,
            seconds=time.perf_counter() - t0,
            constants=self.actor.constants.detach().cpu().tolist())

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue training (envs restart their games on load)."""
        return {"trees": self.trees(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "rng": self.rng.bit_generator.state,
                "env_steps": self.env_steps, "updates": self.updates,
                "episode_returns": list(self.episode_returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            fresh = TorchForest(state["trees"])
            if [t for tree in fresh.template for t in tree if "c" not in t] != \
                    [t for tree in self.actor.template for t in tree if "c" not in t]:
                raise ValueError("the checkpoint's forest has another structure")
            self.actor.constants.copy_(fresh.constants)
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self.episode_returns = [tuple(x) for x in state["episode_returns"]]
        self._obs = None

    def close(self) -> None:
        for env in self.envs:
            env.close()


def train_constants(trees: Sequence[Sequence[Token]], make_env: EnvFactory, cfg: PPOConfig,
                    seed: int = 0, device: str = "cpu",
                    on_update: Callable[[UpdateStats], None] | None = None
                    ) -> tuple[Forest, list[UpdateStats], ConstantPPO]:
    """Run PPO for ``cfg.n_timesteps`` env steps; the tuned forest, per-update stats and the
    (closed) trainer."""
    history = []
    ppo = ConstantPPO(trees, make_env, cfg, seed, device)
    try:
        while not ppo.done:
            stats = ppo.update()
            history.append(stats)
            if on_update is not None:
                on_update(stats)
    finally:
        ppo.close()
    return ppo.trees(), history, ppo
