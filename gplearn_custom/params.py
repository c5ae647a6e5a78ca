"""Parameter parts, each declared once: genetic programming with gplearn's names
(:class:`GPParams`) and the engine's evolution extras (:class:`EvolutionParams`).

A field's ``metadata["help"]`` is its help text; the pipeline composes these parts into its
stage configs and turns the documented fields into command-line options of the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from gplearn_custom.forest import INIT_METHODS
from see import operators as ops


def param(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A documented parameter field."""
    return field(default=default, metadata={"help": help, "choices": choices})


def require(checks: Iterable[tuple[bool, str]], error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` for the first ``(ok, message)`` check that failed."""
    for ok, message in checks:
        if not ok:
            raise error(message)


def at_least(value: float | None, low: float, name: str) -> tuple[bool, str]:
    """A :func:`require` check: ``value`` is at least ``low`` (None, an unset option, passes)."""
    return value is None or value >= low, \
        f"{name} must be {'>= 0' if low == 0 else f'at least {low:g}'}"


def n_jobs_ok(n_jobs: int) -> tuple[bool, str]:
    """A :func:`require` check of a worker count: at least 1, or -1 for every CPU."""
    return n_jobs >= 1 or n_jobs == -1, "--n-jobs must be at least 1, or -1 for every CPU"


@dataclass(frozen=True)
class GPParams:
    """Genetic-programming parameters, with gplearn's names and meanings."""

    population_size: int = param(1000, "GP population_size")
    generations: int = param(20, "GP generations (generation 0 included, as in gplearn)")
    tournament_size: int = param(25, "GP tournament_size")
    const_range: tuple[float, ...] = param((-3.0, 3.0), "GP const_range (low high)")
    init_depth: tuple[int, ...] = param((2, 6), "GP init_depth for random trees (min max)")
    init_method: str = param("half and half", "GP init_method", choices=INIT_METHODS)
    function_set: tuple[str, ...] = param(ops.DEFAULT_FUNCTION_SET, "operator names (see/)")
    parsimony_coefficient: float = param(0.001, "GP parsimony_coefficient (per node)")
    p_crossover: float = param(0.9, "GP p_crossover")
    p_subtree_mutation: float = param(0.01, "GP p_subtree_mutation")
    p_hoist_mutation: float = param(0.01, "GP p_hoist_mutation")
    p_point_mutation: float = param(0.01, "GP p_point_mutation")
    p_point_replace: float = param(0.05, "GP p_point_replace")

    def __post_init__(self) -> None:
        require([
            (self.population_size >= 2, "population_size must be at least 2"),
            (self.generations >= 1, "generations must be at least 1"),
            (1 <= self.tournament_size <= self.population_size,
             "tournament_size must be between 1 and population_size"),
            (len(self.const_range) == 2 and self.const_range[0] <= self.const_range[1],
             "const_range takes two numbers, low <= high"),
            (len(self.init_depth) == 2 and 1 <= self.init_depth[0] <= self.init_depth[1],
             "init_depth takes two integers, 1 <= min <= max"),
            (self.init_method in INIT_METHODS, f"init_method must be one of {INIT_METHODS}"),
            (all(0 <= p <= 1 for p in self.probabilities)
             and sum(self.probabilities) <= 1 + 1e-9,   # 0.8 + 0.05 + 0.05 + 0.1 > 1 in floats
             "p_crossover and the mutation probabilities must be in [0, 1] and sum to <= 1"),
            (0 <= self.p_point_replace <= 1, "p_point_replace must be in [0, 1]"),
            (self.parsimony_coefficient >= 0, "parsimony_coefficient must be >= 0"),
        ])
        if self.function_set:
            try:
                ops.resolve(self.function_set)
            except ValueError as err:
                raise ValueError(f"function_set: {err}") from None

    @property
    def probabilities(self) -> tuple[float, ...]:
        """crossover, subtree, hoist and point mutation (reproduction takes the rest)."""
        return (self.p_crossover, self.p_subtree_mutation, self.p_hoist_mutation,
                self.p_point_mutation)


@dataclass(frozen=True)
class EvolutionParams:
    """What :class:`gplearn_custom.genetic.GeneticForestSearch` adds to gplearn's parameters."""

    p_gradient: float = param(0.2, "probability of the constants variation (PPO or CMA-ES)")
    n_elites: int = param(1, "best individuals copied unchanged into each generation")
    init_jitter: float = param(0.1, "relative noise on the seed policy's constants in "
                                    "generation 0")
    init_random: float = param(0.0, "share of generation 0 drawn as random forests beside the "
                                    "seed forest and its variations")
    fresh_games: bool = param(False, "every generation plays new fitness games and scores "
                                     "every individual on them, elites too (a forest cannot "
                                     "learn its games by heart); each generation's best is "
                                     "a candidate for selection")
    distinct: bool = param(False, "a child whose forest another of its generation already "
                                  "has is replaced by a subtree mutation of it that differs "
                                  "(at most 10 tries; a population otherwise drifts towards "
                                  "copies)")

    def __post_init__(self) -> None:
        require([
            (0 <= self.p_gradient <= 1, "p_gradient must be in [0, 1]"),
            (self.n_elites >= 0, "n_elites must be >= 0"),
            (self.init_jitter >= 0, "init_jitter must be >= 0"),
            (0 <= self.init_random <= 1, "init_random must be in [0, 1]"),
        ])
