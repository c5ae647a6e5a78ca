"""Genetic programming over forests, with gplearn's parameters and a constants variation.

An individual is a forest (one tree per action). Generation 0 is the seed forest (a distilled
policy) and variations of it: every other individual has its constants jittered by
``init_jitter`` (relative Gaussian noise), and every second one also gets one structural
mutation, and a share ``init_random`` of it is random forests; without a seed forest,
generation 0 is random (``init_method``, ``init_depth``). New terminals draw from every
feature, or from the ``terminals`` passed to :meth:`GeneticForestSearch.fit`.
Each later generation keeps ``n_elites`` best individuals unchanged and fills the rest by
tournament selection (``tournament_size``, on fitness minus ``parsimony_coefficient`` times
the forest's node count) and one variation each, drawn with these probabilities:

- ``p_crossover``: one action's tree gets a random subtree of the same action's tree of a
  second tournament winner;
- ``p_subtree_mutation``: the same with a fresh random tree as donor;
- ``p_hoist_mutation``: a random subtree of one tree is replaced by a subtree of itself;
- ``p_point_mutation``: in one tree, each node is replaced with probability
  ``p_point_replace`` (an operator by one of the same arity, a terminal by a random one);
- ``p_gradient``: the forest's constants are tuned in the env (PPO with the teacher term, or
  CMA-ES; see :class:`gplearn_custom.tuning.ConstantTuner`);
- otherwise the parent is copied (reproduction).

Like gplearn, ``generations`` counts generation 0. All random draws come from one generator
seeded by ``random_state``; tuning tasks get their own seeds from it, and the fitness plays
the same seeded games for every forest of a generation (with ``fresh_games`` each generation
plays the games after the last one's and scores every forest again; otherwise every
generation plays the same games), so a seed reproduces a run whatever ``n_jobs`` is, and
on a Dask ``cluster`` (its scheduler's address) too.
With a ``tying`` (:data:`gplearn_custom.forest.Tying`) an individual is a genome: fewer trees
(genes) than actions, each action's tree the signed sum of genes it names, so opposite moves
can share one expression (``LEFT = -RIGHT``) and a variation of a gene changes every action
built from it; the fitness plays the composed forest, and the records and :meth:`forest` give
forests, never genes.
The state after every generation can be written to a JSON checkpoint (by a writer the caller
passes in; the pipeline's is atomic) and a run resumed from it gives the same result as an
uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gplearn_custom import forest as fo
from gplearn_custom.fitness import FitnessSpec, Score
from gplearn_custom.parallel import WorkerPool
from gplearn_custom.params import EvolutionParams, GPParams, require
from gplearn_custom.tuning import ConstantTuner
from see import operators as ops
from see.tree import Forest, Token

CHECKPOINT_FORMAT = "gplearn-custom-checkpoint/1"
#: subtree mutations a child equal to a forest of its generation gets at most (``distinct``)
DISTINCT_TRIES = 10
#: ``write(path, state)`` writes a checkpoint's JSON-able state to ``path``.
CheckpointWriter = Callable[[Path, dict[str, Any]], Any]


def write_json(path: Path, state: dict[str, Any]) -> None:
    """The default checkpoint writer: plain indented JSON (not atomic)."""
    path.write_text(json.dumps(state, indent=2, default=str) + "\n")


@dataclass
class Individual:
    """A forest, its score (None until evaluated) and the variation that made it."""

    trees: Forest
    score: Score | None = None
    origin: str = "seed"

    @property
    def size(self) -> int:
        return fo.size(self.trees)

    def to_dict(self) -> dict[str, Any]:
        return {"trees": self.trees, "origin": self.origin,
                "score": None if self.score is None else self.score.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Individual":
        return cls(d["trees"], None if d["score"] is None else Score.from_dict(d["score"]),
                   d["origin"])


class GeneticForestSearch:
    """Evolve forests of expressions: gplearn's parameters (``gp``) and the engine's extras
    (``evolution``); ``gp.function_set`` names the operators of new nodes."""

    def __init__(self, gp: GPParams = GPParams(), evolution: EvolutionParams = EvolutionParams(),
                 checkpoint_every: int = 1, random_state: int | None = None, n_jobs: int = 1,
                 cluster: str | None = None):
        self.gp, self.evolution = gp, evolution
        self.cluster = cluster
        self.function_set = ops.resolve(gp.function_set)
        self.checkpoint_every = checkpoint_every
        self.random_state, self.n_jobs = random_state, n_jobs
        self.tying: fo.Tying | None = None
        require([
            (sum(self.probabilities) <= 1 + 1e-12,
             "p_crossover, the mutation probabilities and p_gradient must sum to <= 1"),
            (evolution.n_elites < gp.population_size, "n_elites must be below population_size"),
            (checkpoint_every >= 1, "checkpoint_every must be at least 1"),
        ])

    @property
    def probabilities(self) -> tuple[float, ...]:
        """crossover, subtree, hoist, point, gradient (reproduction takes the rest)."""
        return (*self.gp.probabilities, self.evolution.p_gradient)

    def forest(self, trees: Forest) -> Forest:
        """An individual's trees as the forest that plays (its genes composed, with a
        tying)."""
        return trees if self.tying is None else fo.compose(trees, self.tying)

    def penalized(self, ind: Individual) -> float:
        """Selection fitness: raw fitness minus parsimony_coefficient x node count."""
        return ind.score.fitness - self.gp.parsimony_coefficient * ind.size

    def _tournament(self, rng: np.random.Generator, population: list[Individual]) -> Individual:
        entrants = rng.integers(len(population), size=self.gp.tournament_size)
        return population[max(entrants, key=lambda i: (self.penalized(population[i]), -i))]

    def _random_tree(self, rng: np.random.Generator, features: fo.Features) -> list[Token]:
        return fo.random_tree(rng, self.function_set, features, tuple(self.gp.init_depth),
                              self.gp.init_method, tuple(self.gp.const_range))

    def _structural(self, rng: np.random.Generator, kind: str, trees: Forest,
                    features: fo.Features, donor: Forest | None = None) -> Forest:
        """One variation of one random action's tree."""
        a = int(rng.integers(len(trees)))
        out = [list(t) for t in trees]
        if kind == "crossover":
            out[a] = fo.crossover(rng, trees[a], donor[a])
        elif kind == "subtree":
            out[a] = fo.crossover(rng, trees[a], self._random_tree(rng, features))
        elif kind == "hoist":
            out[a] = fo.hoist_mutation(rng, trees[a])
        else:
            out[a] = fo.point_mutation(rng, trees[a], self.function_set, features,
                                       tuple(self.gp.const_range), self.gp.p_point_replace)
        return out

    def _initial(self, rng: np.random.Generator, seed_forest: Forest | None,
                 features: fo.Features, n_trees: int) -> list[Individual]:
        def random_forest() -> Individual:
            return Individual([self._random_tree(rng, features) for _ in range(n_trees)],
                              origin="random")

        if seed_forest is None:
            return [random_forest() for _ in range(self.gp.population_size)]
        n_random = round(self.evolution.init_random * (self.gp.population_size - 1))
        weights = np.array(self.probabilities[1:4]) + 1e-12
        kinds = ("subtree", "hoist", "point")
        population = [Individual([list(t) for t in seed_forest], origin="seed")]
        for i in range(1, self.gp.population_size - n_random):
            trees = fo.jitter_constants(rng, seed_forest, self.evolution.init_jitter)
            origin = "seed-jitter"
            if i % 2 == 0:
                kind = kinds[int(rng.choice(3, p=weights / weights.sum()))]
                trees = self._structural(rng, kind, trees, features)
                origin = f"seed-{kind}"
            population.append(Individual(trees, origin=origin))
        return population + [random_forest() for _ in range(n_random)]

    def _offspring(self, rng: np.random.Generator, population: list[Individual],
                   features: fo.Features) -> tuple[list[Individual], list[int]]:
        """The next generation (unscored children have score None) and the indices of the
        children whose constants are to be tuned."""
        ranked = sorted(range(len(population)),
                        key=lambda i: (-self.penalized(population[i]), i))
        children = [Individual(population[i].trees, population[i].score, "elite")
                    for i in ranked[:self.evolution.n_elites]]
        to_tune = []
        edges = np.cumsum(self.probabilities)
        kinds = ("crossover", "subtree", "hoist", "point", "gradient")
        seen = {fo.key(child.trees) for child in children} if self.evolution.distinct else set()
        while len(children) < self.gp.population_size:
            draw = rng.random()
            parent = self._tournament(rng, population)
            kind = next((k for k, e in zip(kinds, edges) if draw < e), "reproduction")
            if kind == "reproduction":
                child = Individual(parent.trees, parent.score, kind)
            elif kind == "gradient":
                to_tune.append(len(children))
                child = Individual(parent.trees, None, kind)
            else:
                donor = self._tournament(rng, population).trees if kind == "crossover" else None
                trees = self._structural(rng, kind, parent.trees, features, donor)
                same = fo.key(trees) == fo.key(parent.trees)
                child = Individual(trees, parent.score if same else None, kind)
            if self.evolution.distinct and kind != "gradient":   # one to tune will differ
                child = self._distinct(rng, child, seen, features)
                seen.add(fo.key(child.trees))
            children.append(child)
        return children, to_tune

    def _distinct(self, rng: np.random.Generator, child: Individual, seen: set[str],
                  features: fo.Features) -> Individual:
        """``child``, or where its forest is already in the generation (``seen``) the first of
        at most :data:`DISTINCT_TRIES` subtree mutations of it that is not (``child`` itself
        where none is)."""
        if fo.key(child.trees) not in seen:
            return child
        for _ in range(DISTINCT_TRIES):
            trees = self._structural(rng, "subtree", child.trees, features)
            if fo.key(trees) not in seen:
                return Individual(trees, None, "distinct")
        return child

    def _record(self, generation: int, population: list[Individual], seconds: float,
                tuning: list[dict[str, Any]], new_steps: int) -> dict[str, Any]:
        """The generation's summary; ``tuning``: what each constants tuning reported,
        ``new_steps``: env steps the generation spent (scoring, tuning)."""
        scores = [ind.score for ind in population]
        best = max(population, key=lambda ind: ind.score.fitness)

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return float(np.mean(known)) if known else None

        self._env_steps += new_steps
        return {
            "generation": generation, "best_fitness": best.score.fitness,
            "mean_fitness": mean([s.fitness for s in scores]),
            "best_return": best.score.mean_return,
            "mean_return": mean([s.mean_return for s in scores]),
            "best_agreement": best.score.agreement,
            "best_online_agreement": best.score.online_agreement,
            "best_cross_entropy": best.score.cross_entropy,
            "best_size": best.size, "mean_size": float(np.mean([i.size for i in population])),
            "best_constants": fo.constants(best.trees), "best_trees": self.forest(best.trees),
            "origins": dict(Counter(ind.origin for ind in population)),
            "tuned": len(tuning),
            "tuned_return": mean([t.get("last_return") for t in tuning]),
            "tuned_agreement": mean([t.get("last_agreement") for t in tuning]),
            "env_steps": self._env_steps, "seconds": round(seconds, 3),
        }

    def _save(self, write: CheckpointWriter, path: Path, generation: int,
              rng: np.random.Generator, population: list[Individual]) -> None:
        write(path, {
            "format": CHECKPOINT_FORMAT, "generation": generation,
            "rng": rng.bit_generator.state, "env_steps": self._env_steps,
            "tying": self.tying,
            "population": [ind.to_dict() for ind in population],
            "best": self.best_.to_dict(), "history": self.history_})

    def fit(self, fitness: FitnessSpec, n_features: int, n_actions: int,
            seed_forest: Sequence[Sequence[Token]] | None = None,
            tuner: ConstantTuner | None = None, terminals: Sequence[int] | None = None,
            callback: Callable[[dict[str, Any], "GeneticForestSearch"], bool | None] | None
            = None, checkpoint: str | Path | None = None, resume: bool = False,
            write: CheckpointWriter = write_json, tying: fo.Tying | None = None
            ) -> "GeneticForestSearch":
        """Evolve. ``callback(record, self)`` sees every generation's record and may return
        False to stop; ``terminals``: the features new terminals draw from (default: all);
        ``tying``: evolve genes that the actions' trees are composed of (the seed forest is
        read into genes by :func:`gplearn_custom.forest.decompose`);
        ``checkpoint`` is the JSON file ``write`` writes every
        ``checkpoint_every`` generations, which ``resume=True`` continues from when it exists.

        After fitting: ``best_`` (the best individual seen, by raw fitness), ``population_``,
        ``history_`` (one record per generation); ``population_`` is current when the
        callback runs."""
        if self.evolution.p_gradient > 0 and tuner is None:
            raise ValueError("p_gradient > 0 needs a tuner for the constants")
        seed_forest = None if seed_forest is None else [list(t) for t in seed_forest]
        if seed_forest is not None and len(seed_forest) != n_actions:
            raise ValueError(f"the seed forest has {len(seed_forest)} trees for "
                             f"{n_actions} actions")
        self.tying = None if tying is None else [[(int(g), int(s)) for g, s in terms]
                                                 for terms in tying]
        n_genes = n_actions
        if self.tying is not None:
            n_genes = fo.check_tying(self.tying, n_actions)
            if self.evolution.p_gradient > 0:
                raise ValueError("a tying evolves genes; the constants variation tunes "
                                 "forests (set p_gradient to 0)")
            if seed_forest is not None:
                seed_forest = fo.decompose(seed_forest, self.tying)
        if terminals is not None and not (terminals and all(0 <= t < n_features
                                                              for t in terminals)):
            raise ValueError(f"terminals must be feature indices in 0..{n_features - 1}")
        features: fo.Features = list(terminals) if terminals is not None else n_features
        rng = np.random.default_rng(self.random_state)
        path = Path(checkpoint) if checkpoint is not None else None
        self.history_: list[dict[str, Any]] = []
        self._env_steps = 0
        start = 0
        with WorkerPool(fitness, tuner, self.n_jobs, self.cluster).running() as pool:
            if resume and path is not None and path.is_file():
                population, start = self._load(path, rng)
            else:
                t0 = time.perf_counter()
                population = self._initial(rng, seed_forest, features, n_genes)
                steps = self._score(pool, population, self._games(fitness, 0))
                self.best_ = max(population, key=lambda ind: ind.score.fitness)
                record = self._record(0, population, time.perf_counter() - t0, [], steps)
                self.history_.append(record)
                self.population_ = population
                start = 1
                if path is not None:
                    self._save(write, path, 0, rng, population)
                if callback is not None and callback(record, self) is False:
                    return self
            for generation in range(start, self.gp.generations):
                t0 = time.perf_counter()
                population, to_tune = self._offspring(rng, population, features)
                if self.evolution.fresh_games:
                    population = [Individual(ind.trees, None, ind.origin) for ind in population]
                new_steps = 0
                tuning: list[dict[str, Any]] = []
                if to_tune:
                    jobs = [(population[i].trees, int(rng.integers(2**31 - 1))) for i in to_tune]
                    for i, (trees, info) in zip(to_tune, pool.tune(jobs)):
                        population[i] = Individual(trees, None, "gradient")
                        new_steps += info["env_steps"]
                        tuning.append(info)
                new_steps += self._score(pool, population, self._games(fitness, generation))
                best = max(population, key=lambda ind: ind.score.fitness)
                if best.score.fitness > self.best_.score.fitness:
                    self.best_ = best
                record = self._record(generation, population, time.perf_counter() - t0,
                                      tuning, new_steps)
                self.history_.append(record)
                self.population_ = population
                last = generation == self.gp.generations - 1
                if path is not None and (last or generation % self.checkpoint_every == 0):
                    self._save(write, path, generation, rng, population)
                if callback is not None and callback(record, self) is False:
                    break
        self.population_ = population
        return self

    def _games(self, fitness: FitnessSpec, generation: int) -> int:
        """The first fitness game of ``generation``."""
        return fitness.seed + (generation * fitness.episodes if self.evolution.fresh_games
                               else 0)

    def _score(self, pool: WorkerPool, population: list[Individual], seed: int) -> int:
        """Score the unscored individuals on the games from ``seed``, each distinct forest
        once (equal forests play equal games); the env steps that took."""
        todo: dict[str, list[int]] = {}
        for i, ind in enumerate(population):
            if ind.score is None:
                todo.setdefault(fo.key(ind.trees), []).append(i)
        steps = 0
        forests = [self.forest(population[same[0]].trees) for same in todo.values()]
        for same, score in zip(todo.values(), pool.score(forests, seed)):
            for i in same:
                population[i].score = score
            steps += score.env_steps
        return steps

    def _load(self, path: Path, rng: np.random.Generator) -> tuple[list[Individual], int]:
        state = json.loads(path.read_text())
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a checkpoint of this engine")
        saved = state.get("tying")
        if (saved and [[tuple(t) for t in terms] for terms in saved]) != (self.tying or None):
            raise ValueError(f"{path} was written with another tying of the actions")
        rng.bit_generator.state = state["rng"]
        self._env_steps = int(state["env_steps"])
        self.history_ = list(state["history"])
        self.best_ = Individual.from_dict(state["best"])
        return [Individual.from_dict(d) for d in state["population"]], \
            int(state["generation"]) + 1
