# `make demo` and `make test` build .venv from requirements.txt when it is missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
RUNS ?= runs
DEMO_TEACHER ?= pretrained/breakout_teacher
DEMO_LOOP ?= --learner tree --leaves 4 --weights margin --relations --dagger 8 --dagger-episodes 3 \
	--dagger-restarts 2
DEMO_ENV ?= ALE/Pong-v5
DEMO_STEPS ?= 20480

RESULTS_TEACHER ?= pretrained/pong_teacher
RESULTS_DETECTORS ?= ocatari pretrained/space_pong.pt

.PHONY: demo demo-scratch test test-postgres venv bench clean results results-quick figures results-breakout results-pong-tracking results-pong-dagger routes-breakout routes-pong routes-pong-reselect structure-pong

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The pipeline finds a policy from the shipped Breakout teacher: a dataset of its games, then
# VIPER's loop (a decision tree of at most 4 leaves over objects and their relations, margin
# weights, 8 rounds of its own games labelled by the teacher, two loops, the round kept by return
# on selection games), then the kept tree and the teacher on the same 10 seeded games.
demo: $(STAMP)
	@echo "[demo] shipped: the pixel teacher $(DEMO_TEACHER); computed here: its dataset, the imitation loop, the evaluation"
	$(PY) build_dataset.py --teacher $(DEMO_TEACHER) --detector ocatari --runs-dir $(RUNS) \
		--episodes 4 --device cpu --name demo --no-progress
	$(PY) distill_teacher.py --dataset latest --runs-dir $(RUNS) $(DEMO_LOOP) \
		--eval-episodes 10 --eval-max-steps 2000 --name demo

# Every stage from scratch on a tiny budget: teacher, frames, SPACE, dataset, distillation,
# fine-tuning (the numbers mean little; it shows the whole path runs).
demo-scratch: $(STAMP)
	$(PY) train_visual_rl.py --env $(DEMO_ENV) -n $(DEMO_STEPS) --runs-dir $(RUNS) --name demo \
		--checkpoint-freq 10240 --eval-freq 10240 --eval-episodes 1 --final-eval-episodes 2
	$(PY) save_frames.py --teacher latest --runs-dir $(RUNS) -n 1000 --every 2 --ground-truth --name demo
	$(PY) space/main.py --task train --config space/configs/atari_pong.yaml --frames latest --runs-dir $(RUNS) \
		train.max_steps=400 loss.pres_prior.finish=300 loss.tau.finish=300 loss.fix_alpha_steps=50 \
		detect.type_frames=300
	$(PY) space/main.py --task eval --checkpoint latest --frames latest --runs-dir $(RUNS)
	$(PY) build_dataset.py --teacher latest --detector ocatari --runs-dir $(RUNS) --episodes 1 --name demo
	$(PY) distill_teacher.py --dataset latest --runs-dir $(RUNS) --population-size 300 --generations 5 \
		--eval-episodes 0 --name demo
	$(PY) symbolic_finetuning.py --policy latest --runs-dir $(RUNS) --name demo --search evolve \
		--population-size 6 --generations 3 -n 512 --max-steps 1000 --eval-episodes 2
	$(PY) report.py --finetune latest --runs-dir $(RUNS)

# The results table of one game (teacher, distilled, Optuna, decision tree, four fine-tunings,
# per perception; 10 evaluation games, 3 seeds), and the same as a spot check in minutes.
results: $(STAMP)
	$(PY) results.py --teacher $(RESULTS_TEACHER) --detectors $(RESULTS_DETECTORS) \
		--eval-max-steps 3000 --runs-dir $(RUNS)

results-quick: $(STAMP)
	$(PY) results.py --teacher $(RESULTS_TEACHER) --detectors $(RESULTS_DETECTORS) --runs-dir $(RUNS) --quick

# Breakout (no shipped SPACE detector): the distilled forests and the hand-written tracking
# policy with its gains cut, each fine-tuned four ways; games capped at 2,000 agent steps.
results-breakout: $(STAMP)
	$(PY) results.py --teacher pretrained/breakout_teacher --detectors ocatari \
		--start docs/policies/breakout_tracking_untuned.json --eval-max-steps 2000 \
		--runs-dir $(RUNS) --name breakout

# Pong, both perceptions: the hand-written tracking policy fine-tuned three ways beside the
# teacher, the distilled forests and the decision trees; games capped at 3,000 agent steps.
results-pong-tracking: $(STAMP)
	$(PY) results.py --teacher pretrained/pong_teacher --detectors ocatari pretrained/space_pong.pt \
		--start docs/policies/pong_tracking.json --eval-max-steps 3000 --finetune-steps 30000 \
		--finetunes ppo reward-only cmaes --no-finetune-distilled --tune-trials 0 \
		--runs-dir $(RUNS) --name pong_tracking

# Pong (ocatari): the distilled forests and the decision trees with three DAgger rounds each,
# the forests fine-tuned by reward alone; games capped at 3,000 agent steps.
results-pong-dagger: $(STAMP)
	$(PY) results.py --teacher pretrained/pong_teacher --detectors ocatari --dagger 3 \
		--dagger-episodes 3 --eval-max-steps 3000 --finetunes reward-only --tune-trials 0 \
		--runs-dir $(RUNS) --name pong_dagger

# The routes that find a policy from the teacher alone (no --start): VIPER's loop with a
# decision tree and with a GP forest (margin weights, object relations), the tree's loop
# without weights and relations, the tree fine-tuned by CMA-ES, beside the teacher and the
# forest and tree fitted once; every row also under sticky actions.
ROUTES_ARGS ?= --finetunes cmaes --finetune-routes tree --no-finetune-distilled --tune-trials 0
routes-breakout: $(STAMP)
	$(PY) results.py --teacher pretrained/breakout_teacher --detectors ocatari \
		--routes tree gp tree-plain --leaves 4 --loop-restarts 2 --restarts 1 \
		--loop-population 300 --loop-generations 6 --eval-max-steps 2000 \
		$(ROUTES_ARGS) --runs-dir $(RUNS) --name routes

routes-pong: $(STAMP)
	$(PY) results.py --teacher pretrained/pong_teacher --detectors ocatari \
		--routes tree gp --leaves 100 --restarts 1 --eval-max-steps 3000 \
		$(ROUTES_ARGS) --runs-dir $(RUNS) --name routes

# The tree's loop three times per seed, its best four rounds replayed on 8 fresh selection
# games each (as they are and sticky), the best there kept: the shipped Pong policy's row.
routes-pong-reselect: $(STAMP)
	$(PY) results.py --teacher pretrained/pong_teacher --detectors ocatari --routes tree \
		--leaves 100 --loop-restarts 3 --restarts 1 --eval-max-steps 3000 --finetunes cmaes \
		--no-finetune-distilled --tune-trials 0 --loop-reselect 4 --loop-reselect-games 8 \
		--runs-dir $(RUNS) --name routes-reselect

# The GP forest's search by return (the paper's Stage III) from forests distilled over object
# relations: 100 programs x 10 generations, each scored on two 2,000-step games, the best of
# each generation a candidate on 5 selection games; beside the teacher and the forest and tree
# fitted once. STRUCTURE_ARGS="--cluster tcp://HOST:8786" spreads the seeds over Dask workers;
# STRUCTURE=structure-tied ties opposite moves to one expression, structure-tied-length also
# ranks equal returns by game length, structure-tied-distinct also mutates a generation's
# copies apart.
STRUCTURE ?= structure
structure-pong: $(STAMP)
	$(PY) results.py --teacher pretrained/pong_teacher --detectors ocatari --relations \
		--finetunes $(STRUCTURE) --tune-trials 0 --population-size 300 --generations 5 \
		--restarts 1 --evolve-population 100 --evolve-generations 10 --p-gradient 0 \
		--select-episodes 5 --eval-max-steps 3000 $(STRUCTURE_ARGS) --runs-dir $(RUNS) \
		--name structure-relations

# The README's figures, redrawn into docs/figures from the tracked tables (docs/results/*.json)
# and the shipped teachers' curves, nothing rerun (FIGURES_ARGS="--video-policy
# pretrained/policies/breakout.json" also films the shipped policy beside its teacher).
figures: $(STAMP)
	$(PY) make_figures.py --results docs/results/*.json --transfer --docs --runs-dir $(RUNS) \
		$(FIGURES_ARGS)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 tests

# Two Optuna workers and a killed one on a PostgreSQL server started in a temporary folder.
test-postgres: $(STAMP)
	$(PY) -m pytest -q tests/test_postgres.py

bench: $(STAMP)
	$(PY) benchmarks/bench_teacher.py
	$(PY) benchmarks/bench_dataset.py
	$(PY) benchmarks/bench_finetune.py
	$(PY) benchmarks/bench_cluster.py
	$(PY) benchmarks/bench_space.py --env ALE/Pong-v5 --config space/configs/atari_pong.yaml

clean:
	rm -rf $(VENV) .pytest_cache
