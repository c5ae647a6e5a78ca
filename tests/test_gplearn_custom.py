"""gplearn_custom: torch forest parity and gradients, variations, PPO, CMA-ES and evolution on
the offset-catch game of objenv.py (whose best policy is a known forest with constants)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import objenv
from gplearn_custom import forest as fo
from gplearn_custom.cmaes import CMAESConfig, ConstantCMAES
from gplearn_custom.fitness import Evaluator, FitnessSpec, play
from gplearn_custom.genetic import GeneticForestSearch
from gplearn_custom.params import EvolutionParams, GPParams
from gplearn_custom.ppo import ConstantPPO, PPOConfig, train_constants
from gplearn_custom.torch_forest import TorchForest
from gplearn_custom.tuning import ConstantTuner
from see import operators as ops
from see.tree import Forest, check_tree, evaluate, logits

SMOOTH = ("add", "sub", "mul", "div", "neg", "square", "tanh", "sigmoid")
GAMES = list(range(500, 510))  # evaluation games, apart from the ones training plays


def random_forest(rng: np.random.Generator, function_set, n_features: int = 6,
                  n_trees: int = 3) -> Forest:
    return [fo.random_tree(rng, function_set, n_features, (2, 5), "half and half", (-3, 3))
            for _ in range(n_trees)]


def greedy_return(trees: Forest) -> float:
    return float(np.mean(play(trees, objenv.make_env(), GAMES)[0]))


def test_torch_forest_equals_numpy_on_random_forests():
    rng = np.random.default_rng(0)
    names = ops.all_names()
    X = rng.normal(size=(257, 6)) * 2
    X[:5] = 0.0  # protected division and comparisons at zero
    for _ in range(60):
        trees = random_forest(rng, names)
        module = TorchForest(trees)
        out = module(torch.from_numpy(X)).detach().numpy()
        expected = logits(trees, X)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        assert module.trees() == trees
        assert module.constants.numel() == len(fo.constants(trees))


def test_constant_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(32, 6)))
    checked = 0
    while checked < 20:
        trees = random_forest(rng, SMOOTH)
        module = TorchForest(trees)
        if module.constants.numel() == 0:
            continue
        weights = torch.from_numpy(rng.normal(size=(32, 3)))

        def loss(c: torch.Tensor) -> float:
            with torch.no_grad():
                module.constants.copy_(c)
                return float((module(X) * weights).sum())

        base = module.constants.detach().clone()
        value = (module(X) * weights).sum()
        value.backward()
        grad = module.constants.grad.clone()
        if not torch.isfinite(value) or value.abs() > 1e6:
            continue
        eps = 1e-6
        for i in range(base.numel()):
            step = torch.zeros_like(base)
            step[i] = eps
            numeric = (loss(base + step) - loss(base - step)) / (2 * eps)
            assert float(grad[i]) == pytest.approx(numeric, rel=1e-4, abs=1e-4)
        checked += 1


def test_every_constant_gets_a_gradient_through_any_operator():
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.normal(size=(16, 6)))
    differentiable = 0
    for _ in range(40):
        module = TorchForest(random_forest(rng, ops.all_names()))
        out = module(X)                                   # (16, 3)
        if not out.requires_grad:  # no constants, or all of them under comparisons
            continue
        out.sum().backward()
        assert module.constants.grad is not None
        assert module.constants.grad.shape == module.constants.shape
        assert torch.isfinite(module.constants.grad).all()
        differentiable += 1
    assert differentiable >= 10


def test_variations_make_valid_trees_from_the_function_set():
    rng = np.random.default_rng(3)
    function_set = ("add", "mul", "ite", "tanh")
    for _ in range(200):
        tree, donor = random_forest(rng, function_set, n_trees=2)
        for out in (fo.crossover(rng, tree, donor), fo.hoist_mutation(rng, tree),
                    fo.point_mutation(rng, tree, function_set, 6, (-1, 1), 0.5)):
            check_tree(out, 6)
            assert {t["f"] for t in out if "f" in t} <= set(function_set)
        assert len(fo.hoist_mutation(rng, tree)) <= len(tree)
        assert fo.depth(fo.random_tree(rng, function_set, 6, (3, 3), "full", None)) == 3
    values = fo.constants(objenv.BEST)
    assert fo.constants(fo.with_constants(objenv.BEST, values)) == values
    assert fo.constants(objenv.perturbed(0.1)) == [0.5, 20.0, 0.1, 20.0, 0.1]


def test_imitation_fitness_is_the_cross_entropy_to_the_teacher():
    env = objenv.make_env()
    X, actions = [], []
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        for a in range(40):
            X.append(obs)
            actions.append(info["teacher_action"])
            obs, _, _, _, info = env.step(a % 3)
    X, actions = np.array(X), np.array(actions)
    spec = FitnessSpec("imitation", X=X, actions=actions)
    best, off = Evaluator(spec)(objenv.BEST), Evaluator(spec)(objenv.perturbed(0.0))
    assert best.agreement == 1.0 and off.agreement < 0.8
    assert best.fitness == -best.cross_entropy > off.fitness
    values = logits(objenv.BEST, X)
    expected = float(torch.nn.functional.cross_entropy(torch.from_numpy(values),
                                                       torch.from_numpy(actions)))
    assert best.cross_entropy == pytest.approx(expected, rel=1e-9)


def test_ppo_pulls_perturbed_constants_back_until_the_return_passes_a_threshold():
    start = objenv.perturbed(0.1)
    before = greedy_return(start)
    cfg = PPOConfig(n_timesteps=4000, n_envs=4, n_steps=50, batch_size=100, n_epochs=4,
                    learning_rate=0.01, ent_coef=0.0)
    trees, history, _ = train_constants(start, objenv.make_env, cfg, seed=0)
    after = greedy_return(trees)
    best = greedy_return(objenv.BEST)
    assert before < 0.5 * best and after > 0.85 * best, (before, after, best)
    offsets = np.array(fo.constants(trees))[[2, 4]]
    assert np.all(np.abs(offsets - objenv.OFFSET) < 0.12), offsets
    assert history[-1].env_steps == 4000 and history[-1].mean_return > history[0].mean_return


def test_teacher_loss_alone_makes_the_forest_agree_with_the_teacher():
    start = objenv.perturbed(0.0)
    cfg = PPOConfig(n_timesteps=3000, n_envs=2, n_steps=50, batch_size=100, n_epochs=4,
                    learning_rate=0.03, pg_coef=0.0, ent_coef=0.0, vf_coef=0.0,
                    expert_coef=1.0, expert_coef_final=1.0)
    trees, history, _ = train_constants(start, objenv.make_silent_env, cfg, seed=1)
    assert all(h.mean_return in (None, 0.0) for h in history)  # no reward to learn from
    assert history[0].agreement < 0.6 and history[-1].agreement > 0.9
    assert history[-1].expert_loss < history[0].expert_loss
    X = np.random.default_rng(0).uniform(0, 1, size=(500, objenv.LAYOUT.size))
    agree = (logits(trees, X).argmax(1) == logits(objenv.BEST, X).argmax(1)).mean()
    assert agree > 0.85


def test_expert_coefficient_is_annealed():
    cfg = PPOConfig(n_timesteps=400, n_envs=2, n_steps=50, batch_size=100, n_epochs=1,
                    expert_coef=1.0, expert_coef_final=0.0)
    _, history, _ = train_constants(objenv.BEST, objenv.make_env, cfg, seed=0)
    assert [h.expert_coef for h in history] == [1.0, 0.75, 0.5, 0.25]


def test_ppo_resumes_from_its_state():
    cfg = PPOConfig(n_timesteps=400, n_envs=2, n_steps=50, batch_size=50, n_epochs=1)
    first = ConstantPPO(objenv.perturbed(0.1), objenv.make_env, cfg, seed=0)
    first.update()
    state = json.loads(json.dumps({k: v for k, v in first.state_dict().items()
                                    if k in ("trees", "env_steps", "updates")}))
    full = first.state_dict()
    second = ConstantPPO(objenv.perturbed(0.1), objenv.make_env, cfg, seed=0)
    second.load_state_dict(full)
    assert second.updates == 1 and second.env_steps == 100 and second.trees() == state["trees"]
    while not second.done:
        second.update()
    assert second.updates == 4 and second.env_steps == 400
    with pytest.raises(ValueError, match="another structure"):
        ConstantPPO(objenv.BEST[::-1], objenv.make_env, cfg).load_state_dict(full)


def test_cmaes_improves_perturbed_constants():
    env = objenv.make_env()

    def score_many(forests, seeds):
        return [play(f, env, seeds)[:2] for f in forests]

    search = ConstantCMAES(objenv.perturbed(0.1), score_many,
                           CMAESConfig(n_timesteps=6000, sigma0=0.3, episodes=2), seed=0)
    while not search.done:
        stats = search.step()
    assert search.env_steps >= 6000 and stats.iteration == search.iterations
    assert greedy_return(search.trees()) > greedy_return(objenv.perturbed(0.1)) + 5


def evolution(**overrides) -> GeneticForestSearch:
    params = dict(population_size=12, generations=4, tournament_size=3,
                  function_set=("add", "sub", "mul"), const_range=(-1.0, 1.0), p_crossover=0.7,
                  p_subtree_mutation=0.05, p_hoist_mutation=0.02, p_point_mutation=0.03,
                  p_gradient=0.0, random_state=0)
    params.update(overrides)
    parts = {cls: {k: params.pop(k) for k in [f.name for f in dataclasses.fields(cls)]
                   if k in params} for cls in (GPParams, EvolutionParams)}
    return GeneticForestSearch(GPParams(**parts[GPParams]),
                               EvolutionParams(**parts[EvolutionParams]), **params)


REWARD = FitnessSpec("reward", objenv.make_env, episodes=3, seed=1000)


def test_evolution_with_reward_fitness_improves_the_best_fitness():
    search = evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1))
    best = [h["best_fitness"] for h in search.history_]
    assert len(best) == 4 and best == sorted(best)  # the elite keeps the best
    assert best[-1] > best[0] + 5
    assert search.best_.score.fitness == best[-1]
    assert search.history_[0]["origins"]["seed"] == 1


def test_random_forests_beside_the_seed_find_a_structure_from_chosen_terminals():
    still = [[{"c": 1.0}], [{"c": 0.0}], [{"c": 0.0}]]   # NOOP forever: no structure to tune
    chosen = [objenv.PADDLE_Y, objenv.BALL_Y]
    search = evolution(population_size=16, init_random=0.5, p_crossover=0.5,
                       p_subtree_mutation=0.2, p_point_mutation=0.2).fit(
        REWARD, objenv.LAYOUT.size, 3, seed_forest=still, terminals=chosen)
    assert search.history_[0]["origins"]["random"] == 8
    used = {tok["x"] for ind in search.population_ for tree in ind.trees for tok in tree
            if "x" in tok}
    assert used and used <= set(chosen)
    assert greedy_return(search.best_.trees) > greedy_return(still) + 3
    with pytest.raises(ValueError, match="terminals must be feature indices"):
        evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=still, terminals=[99])


def test_tied_moves_evolve_one_expression_for_both_moves(tmp_path):
    """NOOP, UP = gene 1, DOWN = -gene 1: every forest played moves down exactly where it does
    not move up, the genome has two trees, and a search from standing still finds tracking."""
    tying = [[(0, 1)], [(1, 1)], [(1, -1)]]
    still = [[{"c": 1.0}], [{"c": 0.0}], [{"c": 0.0}]]
    chosen = [objenv.PADDLE_Y, objenv.BALL_Y]
    ckpt = tmp_path / "checkpoint.json"
    search = evolution(population_size=16, init_random=0.5, p_crossover=0.5,
                       p_subtree_mutation=0.2, p_point_mutation=0.2).fit(
        REWARD, objenv.LAYOUT.size, 3, seed_forest=still, terminals=chosen, tying=tying,
        checkpoint=ckpt)
    assert all(len(ind.trees) == 2 for ind in search.population_)
    for record in search.history_:
        up, down = record["best_trees"][1:]
        assert down == [{"f": "neg"}, *up] and len(record["best_trees"]) == 3
    best = search.forest(search.best_.trees)
    assert best[2] == [{"f": "neg"}, *best[1]]
    assert greedy_return(best) > greedy_return(still) + 3
    with pytest.raises(ValueError, match="another tying"):
        evolution(population_size=16).fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=still,
                                          checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="p_gradient"):
        evolution(p_gradient=0.2).fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=still,
                                      tuner=ConstantTuner(objenv.make_env), tying=tying)
    with pytest.raises(ValueError, match="signed sum"):
        evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=still,
                        tying=[[(0, 1)], [(2, 1)], [(2, -1)]])


def test_genes_compose_into_forests_and_are_read_back_from_them():
    tying = [[(0, 1)], [(0, 1), (1, 1)], [(2, 1)], [(2, -1)], [(2, 1), (1, 1)],
             [(2, -1), (1, 1)]]
    genes = [[{"c": 0.5}], [{"x": 1}], [{"f": "sub"}, {"x": 2}, {"x": 0}]]
    forest = fo.compose(genes, tying)
    x = np.array([[1.0, 2.0, 5.0]])
    values = [float(evaluate(tree, x)[0]) for tree in forest]
    assert values == [0.5, 2.5, 4.0, -4.0, 6.0, -2.0]
    assert fo.decompose(forest, tying) == [genes[0], [{"c": 0.0}], genes[2]]   # FIRE: never alone


def test_fresh_games_score_every_forest_of_a_generation_on_that_generations_games():
    search = evolution(generations=3, fresh_games=True).fit(
        REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1))

    def returns_on(trees: Forest, generation: int) -> float:
        return float(np.mean(play(trees, objenv.make_env(), [1000 + 3 * generation + i
                                                             for i in range(3)])[0]))

    for record in search.history_:
        assert record["best_return"] == returns_on(record["best_trees"], record["generation"])
    assert search.history_[-1]["origins"]["elite"] == 1
    for ind in search.population_:   # the elite and the copies too, not their old scores
        assert ind.score.mean_return == returns_on(ind.trees, 2)
    assert returns_on(search.history_[0]["best_trees"], 0) != \
        returns_on(search.history_[0]["best_trees"], 1)


class CountedGames(objenv.OffsetCatchEnv):
    """The offset-catch game, noting the seed of every game it starts in ``seeds``."""

    seeds: list[int] = []

    def reset(self, *, seed=None, options=None):
        CountedGames.seeds.append(seed)
        return super().reset(seed=seed, options=options)


def test_equal_forests_of_a_generation_play_its_games_once():
    """Copies (no variation at all) fill the last generation with equal forests: each distinct
    one plays the generation's games once, and its copies get the same score."""
    CountedGames.seeds = []
    spec = FitnessSpec("reward", lambda index=0: CountedGames(), episodes=3, seed=1000)
    search = evolution(population_size=10, generations=3, fresh_games=True, p_crossover=0.0,
                       p_subtree_mutation=0.0, p_hoist_mutation=0.0, p_point_mutation=0.0).fit(
        spec, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1))
    last = {1000 + 3 * 2 + i for i in range(3)}
    distinct = {fo.key(ind.trees): ind.score for ind in search.population_}
    assert len(distinct) < len(search.population_)
    assert sum(seed in last for seed in CountedGames.seeds) == 3 * len(distinct)
    for ind in search.population_:
        assert ind.score == distinct[fo.key(ind.trees)]
        assert ind.score.mean_return == float(np.mean(play(ind.trees, objenv.make_env(),
                                                           sorted(last))[0]))


def test_distinct_children_keep_every_forest_of_a_generation_apart():
    """Where children would be copies (no variation drawn), ``distinct`` mutates each copy
    until it differs from the rest of its generation; without it the copies stay."""
    copies = dict(population_size=10, generations=3, p_crossover=0.0, p_subtree_mutation=0.0,
                  p_hoist_mutation=0.0, p_point_mutation=0.0)
    kept = evolution(**copies).fit(REWARD, objenv.LAYOUT.size, 3,
                                   seed_forest=objenv.perturbed(0.1))
    assert len({fo.key(ind.trees) for ind in kept.population_}) < 10
    apart = evolution(**copies, distinct=True).fit(REWARD, objenv.LAYOUT.size, 3,
                                                   seed_forest=objenv.perturbed(0.1))
    assert len({fo.key(ind.trees) for ind in apart.population_}) == 10
    assert apart.history_[-1]["origins"].get("distinct", 0) > 0
    for ind in apart.population_:
        check_tree(ind.trees[0], objenv.LAYOUT.size)


def test_evolution_with_the_gradient_variation_is_reproducible_in_parallel():
    tuner = ConstantTuner(objenv.make_env, ppo=PPOConfig(n_timesteps=200, n_envs=2,
                                                         n_steps=50, batch_size=100))
    runs = [evolution(generations=2, p_crossover=0.5, p_gradient=0.3, n_jobs=n).fit(
        REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1), tuner=tuner)
        for n in (1, 2)]
    assert runs[0].history_[1]["tuned"] > 0
    assert [h["best_fitness"] for h in runs[0].history_] == \
        [h["best_fitness"] for h in runs[1].history_]
    assert fo.key(runs[0].best_.trees) == fo.key(runs[1].best_.trees)


def test_a_killed_evolution_resumes_to_the_uninterrupted_result(tmp_path):
    whole = evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1))

    def kill_after_generation_1(record, search):
        if record["generation"] == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "checkpoint.json"
    with pytest.raises(KeyboardInterrupt):
        evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1),
                        callback=kill_after_generation_1, checkpoint=ckpt)
    assert json.loads(ckpt.read_text())["generation"] == 1
    seen = []
    resumed = evolution().fit(REWARD, objenv.LAYOUT.size, 3, seed_forest=objenv.perturbed(0.1),
                              checkpoint=ckpt, resume=True,
                              callback=lambda record, s: seen.append(record["generation"]))
    assert seen == [2, 3]

    def untimed(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert untimed(resumed.history_) == untimed(whole.history_)
    assert fo.key(resumed.best_.trees) == fo.key(whole.best_.trees)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="sum to <= 1"):
        evolution(p_crossover=0.9, p_gradient=0.2)
    evolution(p_crossover=0.8, p_subtree_mutation=0.05, p_hoist_mutation=0.05,
              p_point_mutation=0.1)   # sums to 1 on paper, a hair above in floats: accepted
    with pytest.raises(ValueError, match="tournament_size"):
        evolution(tournament_size=50)
    with pytest.raises(ValueError, match="needs a tuner"):
        evolution(p_gradient=0.2).fit(REWARD, objenv.LAYOUT.size, 3, objenv.BEST)
    with pytest.raises(ValueError, match="needs a dataset"):
        FitnessSpec("imitation")


def test_a_length_bonus_adds_the_share_of_the_cap_the_games_lasted():
    spec = FitnessSpec("reward", objenv.make_env, episodes=2, seed=0, max_steps=30,
                       length_bonus=0.4)
    plain = Evaluator(FitnessSpec("reward", objenv.make_env, episodes=2, seed=0, max_steps=30))
    for forest in (objenv.BEST, objenv.perturbed(0.1)):
        score, base = Evaluator(spec)(forest), plain(forest)
        assert score.mean_return == base.mean_return and score.env_steps == base.env_steps
        assert score.fitness == pytest.approx(base.fitness + 0.4 * score.env_steps / 60)
    with pytest.raises(ValueError, match="needs max_steps"):
        FitnessSpec("reward", objenv.make_env, length_bonus=0.4)
