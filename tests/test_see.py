"""The operator table: closure, numpy/torch/sympy parity, gradients and the gplearn adapters."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import sympy
import torch
from gplearn.functions import _Function, div2
from gplearn.genetic import SymbolicRegressor

import see
from see import DIV_EPS, LIMIT, OPERATORS, Operator
from see.tree import evaluate, evaluate_torch, fold, from_gplearn

NAMES = see.all_names()

#: Edge values: zeros, signs, the protected-division threshold and just above it, tiny and huge
#: magnitudes, and values whose float sums round (0.1 + 0.2).
EDGE = (0.0, -0.0, 1.0, -1.0, 2.0, 2.5, -7.0, 0.1, 0.2, 0.3, DIV_EPS, -DIV_EPS,
        DIV_EPS * (1 + 1e-12), -DIV_EPS * (1 + 1e-12), 1e-300, -1e-300, 1e300, -1e300)


def edge_columns(arity: int) -> list[np.ndarray]:
    """Every combination of edge values (so every tie), one column per argument."""
    grid = np.array(list(itertools.product(EDGE, repeat=arity)))
    return [grid[:, i] for i in range(arity)]


def random_columns(arity: int, n: int = 600, seed: int = 0) -> list[np.ndarray]:
    """Random values over many magnitudes, plus values around the division threshold."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-6, 6, size=(arity, n))
    values = rng.normal(size=(arity, n)) * scale
    values[:, : n // 4] = rng.uniform(-3 * DIV_EPS, 3 * DIV_EPS, size=(arity, n // 4))
    return list(values)


def sympy_numeric(op: Operator, columns: list[np.ndarray]) -> np.ndarray:
    """The sympy form evaluated by lambdify, clipped to +-LIMIT as the numeric forms are."""
    symbols = sympy.symbols(f"a0:{op.arity}")
    fn = sympy.lambdify(symbols, op.sympy(*symbols), modules="numpy")
    with np.errstate(all="ignore"):
        values = np.broadcast_to(np.asarray(fn(*columns), dtype=np.float64), columns[0].shape)
    return np.clip(values, -LIMIT, LIMIT)


def torch_numeric(op: Operator, columns: list[np.ndarray]) -> np.ndarray:
    return op.torch(*[torch.from_numpy(c) for c in columns]).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_closure(name: str) -> None:
    see.check_closure(see.get(name))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("inputs", ["edge", "random"])
def test_numpy_torch_sympy_parity(name: str, inputs: str) -> None:
    op = see.get(name)
    columns = edge_columns(op.arity) if inputs == "edge" else random_columns(op.arity)
    expected = op.numpy(*columns)
    assert expected.shape == columns[0].shape
    np.testing.assert_allclose(torch_numeric(op, columns), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(sympy_numeric(op, columns), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sympy_exact_evaluation_matches_numpy(name: str) -> None:
    """sympy's own arithmetic (no lambdify) on sampled edge combinations."""
    op = see.get(name)
    combos = list(itertools.product(EDGE, repeat=op.arity))
    picks = np.random.default_rng(1).choice(len(combos), size=min(60, len(combos)),
                                            replace=False)
    for combo in (combos[i] for i in picks):
        exact = float(op.sympy(*[sympy.Float(v) for v in combo]))
        got = float(op.numpy(*[np.array([v]) for v in combo])[0])
        assert np.clip(exact, -LIMIT, LIMIT) == pytest.approx(got, rel=1e-12, abs=0), combo


SEMANTICS = [
    ("div", (3.0, 0.0), 1.0),
    ("div", (3.0, DIV_EPS), 1.0),
    ("div", (3.0, -DIV_EPS), 1.0),
    ("div", (3.0, 0.002), 1500.0),
    ("div", (-3.0, -0.5), 6.0),
    ("div", (1e300, 0.01), LIMIT),
    ("mul", (1e300, -1e300), -LIMIT),
    ("add", (1e300, 1e300), LIMIT),
    ("square", (-1e300,), LIMIT),
    ("gt", (1.0, 1.0), 0.0),
    ("gt", (2.0, 1.0), 1.0),
    ("lt", (1.0, 1.0), 0.0),
    ("lt", (-2.0, 1.0), 1.0),
    ("min", (-1.0, -1.0), -1.0),
    ("max", (3.0, -1.0), 3.0),
    ("ite", (0.0, 5.0, 7.0), 7.0),
    ("ite", (1e-300, 5.0, 7.0), 5.0),
    ("ite", (-2.0, 5.0, 7.0), 7.0),
    ("sigmoid", (0.0,), 0.5),
    ("sigmoid", (-1e300,), 0.0),
    ("tanh", (1e300,), 1.0),
    ("xdist", (3.0, -2.0), 5.0),
    ("ydist", (-2.0, 3.0), 5.0),
    ("left_of", (10.0, 20.0), 1.0),
    ("left_of", (20.0, 20.0), 0.0),
    ("right_of", (30.0, 20.0), 1.0),
    ("above", (10.0, 20.0), 1.0),
    ("below", (10.0, 20.0), 0.0),
    ("within", (3.0, 5.0, 2.0), 1.0),
    ("within", (3.0, 5.0, -2.0), 1.0),
    ("within", (3.0, 5.5, 2.0), 0.0),
]


@pytest.mark.parametrize("name, args, expected", SEMANTICS)
def test_semantics(name: str, args: tuple[float, ...], expected: float) -> None:
    op = see.get(name)
    columns = [np.array([a]) for a in args]
    assert op.numpy(*columns)[0] == expected
    assert torch_numeric(op, columns)[0] == expected
    assert sympy_numeric(op, columns)[0] == expected


def gradients(op: Operator, columns: list[np.ndarray]) -> list[np.ndarray]:
    """d sum(op) / d argument, zeros where the graph does not reach an argument."""
    inputs = [torch.tensor(c, requires_grad=True) for c in columns]
    out = op.torch(*inputs)
    if not out.requires_grad:
        return [np.zeros_like(c) for c in columns]
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
    return [np.zeros_like(c) if g is None else g.numpy() for c, g in zip(columns, grads)]


@pytest.mark.parametrize("name", NAMES)
def test_torch_gradients(name: str) -> None:
    op = see.get(name)
    rng = np.random.default_rng(2)
    away_from_kinks = [rng.choice([-1.0, 1.0], 50) * rng.uniform(0.1, 2.0, 50)
                       for _ in range(op.arity)]
    grads = gradients(op, away_from_kinks)
    for i, grad in enumerate(grads):
        assert np.all(np.isfinite(grad))
        assert np.any(grad != 0) == (i in op.grad_args), f"argument {i}"
    for grad in gradients(op, edge_columns(op.arity)):
        assert np.all(np.isfinite(grad))
    if op.differentiable:
        inputs = tuple(torch.tensor(c[:6], requires_grad=True) for c in away_from_kinks)
        assert torch.autograd.gradcheck(op.torch, inputs)


def test_gradcheck_near_division_threshold() -> None:
    div = see.get("div")
    b = np.array([0.0, DIV_EPS, -DIV_EPS, DIV_EPS * (1 + 1e-9), 1e-300])
    grad_a, grad_b = gradients(div, [np.full(5, 2.0), b])
    assert np.all(np.isfinite(grad_a)) and np.all(np.isfinite(grad_b))
    np.testing.assert_array_equal(grad_a[[0, 1, 2, 4]], 0.0)
    assert grad_a[3] == pytest.approx(1 / b[3])


def test_float32_torch_forms_stay_finite() -> None:
    for op in OPERATORS.values():
        args = [torch.full((3,), 3e38, dtype=torch.float32) for _ in range(op.arity)]
        out = op.torch(*args)
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), op.name


def test_infix_format() -> None:
    inner = see.get("neg").format("x1")
    assert see.get("ite").format("x0", "1.5", inner) == "(1.5 if x0 > 0 else (-x1))"
    assert see.get("within").format("a", "b", "r") == "within(a, b, r)"
    with pytest.raises(ValueError, match="takes 2 arguments"):
        see.get("add").format("x0")


def test_lookup_and_resolve() -> None:
    assert see.get("add").arity == 2
    assert set(see.DEFAULT_FUNCTION_SET) <= set(NAMES)
    assert see.resolve(" add, max ,ite") == ("add", "max", "ite")
    assert see.resolve(["gt", "lt"]) == ("gt", "lt")
    with pytest.raises(ValueError, match="did you mean 'add'"):
        see.get("ad")
    with pytest.raises(ValueError, match="more than once: add"):
        see.resolve("add,sub,add")
    with pytest.raises(ValueError, match="empty operator name"):
        see.resolve("add,,sub")
    with pytest.raises(ValueError, match="unknown operator 'nope'"):
        see.gplearn_function_set(["add", "nope"])
    assert pickle.loads(pickle.dumps(see.get("within"))) is see.get("within")


@pytest.mark.parametrize("name", NAMES)
def test_gplearn_function(name: str) -> None:
    op = see.get(name)
    fn = see.gplearn_function(name)
    assert isinstance(fn, _Function) and (fn.name, fn.arity) == (op.name, op.arity)
    assert fn.function is op.numpy
    assert pickle.loads(pickle.dumps(fn)).function is op.numpy


def test_div_matches_gplearn_builtin() -> None:
    a, b = random_columns(2, seed=3)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(see.get("div").numpy(a, b), div2(a, b))


def _half_np(a):
    return np.multiply(a, 0.5)


def test_check_closure_rejects_open_operators() -> None:
    def entry(name, numpy_form, torch_form, infix="{0}"):
        return Operator(name, 1, numpy_form, torch_form, lambda a: a, infix, (0,), "bad",
                        python="{0}")

    with pytest.raises(ValueError, match="floating-point error"):
        see.check_closure(entry("cube", lambda a: a ** 3, lambda a: a ** 3))
    with pytest.raises(ValueError, match="floating-point error"):
        see.check_closure(entry("selfdiv", lambda a: a / a, lambda a: a / a))
    with pytest.raises(ValueError, match="shape"):
        see.check_closure(entry("total", lambda a: np.sum(a, keepdims=True), lambda a: a))
    with pytest.raises(ValueError, match="not closed"):
        see.check_closure(entry("cube", _half_np, lambda a: a ** 3))
    with pytest.raises(ValueError, match="infix"):
        see.check_closure(entry("half", _half_np, lambda a: a * 0.5, infix="half()"))


def test_new_table_entry_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    half = Operator("half", 1, _half_np, lambda a: a * 0.5, lambda a: a / 2, "({0} / 2)",
                    (0,), "a / 2", python="({0} / 2)")
    see.check_closure(half)
    monkeypatch.setitem(OPERATORS, "half", half)
    assert "half" in see.all_names() and see.get("half") is half
    assert see.to_numpy("half")(np.array([3.0]))[0] == 1.5
    assert see.to_torch("half")(torch.tensor([3.0])).item() == 1.5
    assert see.to_sympy("half")(sympy.Symbol("x")) == sympy.Symbol("x") / 2
    assert see.resolve("add,half") == ("add", "half")
    fns = see.gplearn_function_set(["add", "half"])
    assert [f.name for f in fns] == ["add", "half"]
    monkeypatch.undo()
    assert "half" not in see.all_names()
    with pytest.raises(ValueError):
        see.get("half")


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).uniform(-1, 1, size=(200, 3))
    return X, np.maximum(X[:, 0], X[:, 1]) - X[:, 2]


def test_gplearn_recovers_planted_rule(planted) -> None:
    X, y = planted
    names = ("add", "sub", "mul", "div", "max", "min", "ite", "gt")
    est = SymbolicRegressor(population_size=200, generations=3, n_jobs=2, random_state=2,
                            init_depth=(1, 3), parsimony_coefficient=0.01,
                            function_set=see.gplearn_function_set(names))
    est.fit(X, y)
    np.testing.assert_allclose(est.predict(X), y, atol=1e-12)
    tokens = from_gplearn(est._program.program)
    x = sympy.symbols("x0:3")
    formula = fold(tokens, lambda t: x[t["x"]] if "x" in t else sympy.Float(t["c"]),
                   lambda op, args: op.sympy(*args))
    np.testing.assert_allclose(sympy.lambdify(x, formula, modules="numpy")(*X.T), y, atol=1e-12)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict(X), est.predict(X))


def test_gplearn_programs_match_table_evaluation(planted) -> None:
    """Every program of a real parallel run over the whole table, evaluated by our table."""
    X, y = planted
    est = SymbolicRegressor(population_size=200, generations=3, n_jobs=2, random_state=0,
                            function_set=see.gplearn_function_set(NAMES))
    est.fit(X, y)
    used = set()
    for program in est._programs[-1]:
        tokens = from_gplearn(program.program)
        used |= {t["f"] for t in tokens if "f" in t}
        expected = program.execute(X)
        np.testing.assert_array_equal(evaluate(tokens, X), expected)
        ours_torch = evaluate_torch(tokens, torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(ours_torch, expected, rtol=1e-9, atol=1e-12)
    assert used == set(NAMES)
