"""Our genetic-programming engine for forests of expressions with differentiable constants.

Forests (one prefix tree per action, as in policy.json) evolve with gplearn's parameters
(:class:`GPParams`, :class:`GeneticForestSearch`); their constants become torch parameters
(:class:`TorchForest`) trained by PPO with a soft teacher term (:class:`ConstantPPO`), or searched by CMA-ES
(:class:`ConstantCMAES`); fitness is imitation, reward or both (:class:`FitnessSpec`). The
engine reads and writes no run folders: Stage III (:mod:`diffses.finetune`) drives it.
"""

from gplearn_custom.cmaes import CMAESConfig, ConstantCMAES
from gplearn_custom.fitness import Evaluator, FitnessSpec, Score
from gplearn_custom.genetic import GeneticForestSearch, Individual
from gplearn_custom.params import EvolutionParams, GPParams
from gplearn_custom.ppo import ConstantPPO, PPOConfig, train_constants
from gplearn_custom.torch_forest import TorchForest
from gplearn_custom.tuning import ConstantTuner

__all__ = [
    "CMAESConfig", "ConstantCMAES", "ConstantPPO", "ConstantTuner", "Evaluator",
    "EvolutionParams", "FitnessSpec", "GPParams", "GeneticForestSearch", "Individual",
    "PPOConfig", "Score", "TorchForest", "train_constants",
]
