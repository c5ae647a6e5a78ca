"""The operator table: every operator of a symbolic policy, defined once in all its forms.

An operator is one :class:`Operator` entry of :data:`OPERATORS`, keyed by its token (the
``"f"`` of ``{"f": "add"}`` in ``policy.json``). Each entry holds

- ``numpy``: a vectorised form over float64 arrays (and scalars), used by gplearn and our
  engine; a module-level function, so gplearn programs pickle;
- ``torch``: the same maths on tensors that broadcast together, differentiable where the maths
  is (``grad_args`` lists the arguments with a non-zero gradient almost everywhere);
- ``sympy``: the exact formula on sympy expressions, for readable and simplified forms;
- ``infix``: a readable template, ``"({0} + {1})"``, filled by :meth:`Operator.format`;
- ``python``: a plain-Python template (``math`` and :data:`PYTHON_HELPERS` only) for policies
  exported as standalone functions, with the same saturation as the numeric forms.

Closure. Numeric forms saturate at ``±LIMIT`` (1e300) instead of overflowing: for any inputs
within ``±LIMIT`` every numeric form returns finite values within ``±LIMIT``, so a whole
program over finite features stays finite. Numeric form == ``clip(sympy form, -LIMIT, LIMIT)``;
sympy forms leave the clip out to stay readable. :func:`check_closure` enforces this on every
entry when the module is imported, the way gplearn's ``make_function`` checks custom functions.

Protected division: ``div(a, b) = a / b`` where ``|b| > DIV_EPS`` (0.001), else ``1.0``
(gplearn's rule; ``|b| == DIV_EPS`` gives 1.0).

Comparisons and relations return 1.0 or 0.0 and are strict (ties give 0.0) except
``within``, which includes its boundary. Image y grows downward: ``above(a, b)`` is 1.0 when
``a < b``, i.e. y-coordinate ``a`` is higher on screen than ``b``.

API: ``OPERATORS``, ``Operator``, ``get(name)``, ``all_names()``, ``resolve(names)``,
``to_numpy(name)``, ``to_torch(name)``, ``to_sympy(name)``, ``check_closure(op)``,
``gplearn_function(name)``, ``gplearn_function_set(names)``, ``DEFAULT_FUNCTION_SET``,
``LIMIT``, ``DIV_EPS``. Adding an operator is one ``Operator(...)`` entry in the table.
"""

from __future__ import annotations

import difflib
import itertools
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import sympy
import torch

if TYPE_CHECKING:
    from gplearn.functions import _Function

#: Numeric forms saturate at +-LIMIT; inputs within +-LIMIT give outputs within +-LIMIT.
LIMIT = 1e300
#: Protected division divides only where |denominator| > DIV_EPS; elsewhere it gives 1.0.
DIV_EPS = 1e-3


@dataclass(frozen=True)
class Operator:
    """One operator: token, arity, numpy/torch/sympy forms and a readable infix template."""

    name: str
    arity: int
    numpy: Callable[..., np.ndarray]
    torch: Callable[..., torch.Tensor]
    sympy: Callable[..., sympy.Expr]
    infix: str
    grad_args: tuple[int, ...]
    doc: str
    python: str = ""

    @property
    def differentiable(self) -> bool:
        """Whether the torch form passes a non-zero gradient to some argument."""
        return bool(self.grad_args)

    def format(self, *args: str) -> str:
        """The readable form with ``args`` (already formatted operands) filled in."""
        if len(args) != self.arity:
            raise ValueError(f"operator {self.name!r} takes {self.arity} arguments, "
                             f"got {len(args)}")
        return self.infix.format(*args)

    def __reduce__(self) -> tuple[Callable[[str], Operator], tuple[str]]:
        return get, (self.name,)


def _sat_np(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, -LIMIT), LIMIT)


def _sat_torch(x: torch.Tensor) -> torch.Tensor:
    limit = min(LIMIT, torch.finfo(x.dtype).max)
    return x.clamp(-limit, limit)


def _indicator_torch(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.to(like.dtype)


def _piecewise_indicator(condition: sympy.Basic) -> sympy.Expr:
    return sympy.Piecewise((sympy.S.One, condition), (sympy.S.Zero, True))


def _add_np(a, b):
    return _sat_np(np.add(a, b))


def _add_torch(a, b):
    return _sat_torch(a + b)


def _sub_np(a, b):
    return _sat_np(np.subtract(a, b))


def _sub_torch(a, b):
    return _sat_torch(a - b)


def _mul_np(a, b):
    with np.errstate(over="ignore"):
        return _sat_np(np.multiply(a, b))


def _mul_torch(a, b):
    return _sat_torch(a * b)


def _div_np(a, b):
    ok = np.abs(b) > DIV_EPS
    return np.where(ok, _sat_np(np.divide(a, np.where(ok, b, 1.0))), 1.0)


def _div_torch(a, b):
    ok = b.abs() > DIV_EPS
    quotient = _sat_torch(a / torch.where(ok, b, torch.ones_like(b)))
    return torch.where(ok, quotient, torch.ones_like(quotient))


def _div_sympy(a, b):
    divides = sympy.Abs(b) > DIV_EPS
    if divides == sympy.false:  # a numeric small b: a / b may not even be defined
        return sympy.S.One
    return sympy.Piecewise((a / b, divides), (sympy.S.One, True))


def _neg_np(a):
    return np.negative(a)


def _neg_torch(a):
    return -a


def _abs_np(a):
    return np.abs(a)


def _abs_torch(a):
    return a.abs()


def _min_np(a, b):
    return np.minimum(a, b)


def _min_torch(a, b):
    return torch.minimum(a, b)


def _max_np(a, b):
    return np.maximum(a, b)


def _max_torch(a, b):
    return torch.maximum(a, b)


def _square_np(a):
    with np.errstate(over="ignore"):
        return _sat_np(np.square(a))


def _square_torch(a):
    return _sat_torch(a * a)


def _sigmoid_np(a):
    e = np.exp(-np.abs(a))  # in (0, 1]: never overflows
    return np.where(np.greater_equal(a, 0), 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_torch(a):
    return torch.sigmoid(a)


def _tanh_np(a):
    return np.tanh(a)


def _tanh_torch(a):
    return torch.tanh(a)


def _gt_np(a, b):
    return np.greater(a, b).astype(np.float64)


def _gt_torch(a, b):
    return _indicator_torch(a > b, a)


def _lt_np(a, b):
    return np.less(a, b).astype(np.float64)


def _lt_torch(a, b):
    return _indicator_torch(a < b, a)


def _ite_np(a, b, c):
    return np.where(np.greater(a, 0), b, c)


def _ite_torch(a, b, c):
    return torch.where(a > 0, b, c)


def _dist_np(a, b):
    return _sat_np(np.abs(np.subtract(a, b)))


def _dist_torch(a, b):
    return _sat_torch((a - b).abs())


def _within_np(a, b, r):
    return np.less_equal(np.abs(np.subtract(a, b)), np.abs(r)).astype(np.float64)


def _within_torch(a, b, r):
    return _indicator_torch((a - b).abs() <= r.abs(), a)


#: The table. Entry fields: name, arity, numpy, torch, sympy, infix, grad_args, doc, python.
OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Operator("add", 2, _add_np, _add_torch, lambda a, b: a + b,
             "({0} + {1})", (0, 1), "a + b",
             python="_sat({0} + {1})"),
    Operator("sub", 2, _sub_np, _sub_torch, lambda a, b: a - b,
             "({0} - {1})", (0, 1), "a - b",
             python="_sat({0} - {1})"),
    Operator("mul", 2, _mul_np, _mul_torch, lambda a, b: a * b,
             "({0} * {1})", (0, 1), "a * b",
             python="_sat({0} * {1})"),
    Operator("div", 2, _div_np, _div_torch, _div_sympy,
             "({0} / {1})", (0, 1), "a / b where |b| > 0.001, else 1",
             python="(_sat({0} / {1}) if abs({1}) > 0.001 else 1.0)"),
    Operator("neg", 1, _neg_np, _neg_torch, lambda a: -a,
             "(-{0})", (0,), "-a",
             python="(-{0})"),
    Operator("abs", 1, _abs_np, _abs_torch, sympy.Abs,
             "abs({0})", (0,), "|a|",
             python="abs({0})"),
    Operator("min", 2, _min_np, _min_torch, sympy.Min,
             "min({0}, {1})", (0, 1), "the smaller of a and b",
             python="min({0}, {1})"),
    Operator("max", 2, _max_np, _max_torch, sympy.Max,
             "max({0}, {1})", (0, 1), "the larger of a and b",
             python="max({0}, {1})"),
    Operator("square", 1, _square_np, _square_torch, lambda a: a ** 2,
             "({0} ** 2)", (0,), "a * a",
             python="_sat({0} * {0})"),
    Operator("sigmoid", 1, _sigmoid_np, _sigmoid_torch, lambda a: 1 / (1 + sympy.exp(-a)),
             "sigmoid({0})", (0,), "1 / (1 + exp(-a))",
             python="_sigmoid({0})"),
    Operator("tanh", 1, _tanh_np, _tanh_torch, sympy.tanh,
             "tanh({0})", (0,), "tanh(a)",
             python="math.tanh({0})"),
    Operator("gt", 2, _gt_np, _gt_torch, lambda a, b: _piecewise_indicator(a > b),
             "({0} > {1})", (), "1 if a > b else 0",
             python="(1.0 if {0} > {1} else 0.0)"),
    Operator("lt", 2, _lt_np, _lt_torch, lambda a, b: _piecewise_indicator(a < b),
             "({0} < {1})", (), "1 if a < b else 0",
             python="(1.0 if {0} < {1} else 0.0)"),
    Operator("ite", 3, _ite_np, _ite_torch,
             lambda a, b, c: sympy.Piecewise((b, a > 0), (c, True)),
             "({1} if {0} > 0 else {2})", (1, 2), "b if a > 0 else c",
             python="({1} if {0} > 0 else {2})"),
    Operator("xdist", 2, _dist_np, _dist_torch, lambda a, b: sympy.Abs(a - b),
             "xdist({0}, {1})", (0, 1), "|a - b| of two x coordinates",
             python="_sat(abs({0} - {1}))"),
    Operator("ydist", 2, _dist_np, _dist_torch, lambda a, b: sympy.Abs(a - b),
             "ydist({0}, {1})", (0, 1), "|a - b| of two y coordinates",
             python="_sat(abs({0} - {1}))"),
    Operator("left_of", 2, _lt_np, _lt_torch, lambda a, b: _piecewise_indicator(a < b),
             "left_of({0}, {1})", (), "1 if x coordinate a < b (a left of b) else 0",
             python="(1.0 if {0} < {1} else 0.0)"),
    Operator("right_of", 2, _gt_np, _gt_torch, lambda a, b: _piecewise_indicator(a > b),
             "right_of({0}, {1})", (), "1 if x coordinate a > b (a right of b) else 0",
             python="(1.0 if {0} > {1} else 0.0)"),
    Operator("above", 2, _lt_np, _lt_torch, lambda a, b: _piecewise_indicator(a < b),
             "above({0}, {1})", (), "1 if y coordinate a < b (y grows downward) else 0",
             python="(1.0 if {0} < {1} else 0.0)"),
    Operator("below", 2, _gt_np, _gt_torch, lambda a, b: _piecewise_indicator(a > b),
             "below({0}, {1})", (), "1 if y coordinate a > b (y grows downward) else 0",
             python="(1.0 if {0} > {1} else 0.0)"),
    Operator("within", 3, _within_np, _within_torch,
             lambda a, b, r: _piecewise_indicator(sympy.Abs(a - b) <= sympy.Abs(r)),
             "within({0}, {1}, {2})", (), "1 if |a - b| <= |r| else 0",
             python="(1.0 if abs({0} - {1}) <= abs({2}) else 0.0)"),
)}

#: The default search set: the table without aliases (the relations repeat gt, lt and a
#: distance under coordinate names; sigmoid is an affine map of tanh).
DEFAULT_FUNCTION_SET: tuple[str, ...] = (
    "add", "sub", "mul", "div", "neg", "abs", "min", "max", "square", "tanh",
    "gt", "lt", "ite", "within",
)


#: Helpers the ``python`` templates call; an exported module includes this source.
PYTHON_HELPERS = '''

def _sat(v, limit=1e300):
    return limit if v > limit else -limit if v < -limit else v


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
'''


def get(name: str) -> Operator:
    """The table entry for ``name``; an unknown name raises ValueError with close matches."""
    try:
        return OPERATORS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(OPERATORS), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown operator {name!r} (known: {', '.join(OPERATORS)}){hint}"
                         ) from None


def all_names() -> tuple[str, ...]:
    """All operator names, in table order."""
    return tuple(OPERATORS)


def resolve(names: str | Iterable[str]) -> tuple[str, ...]:
    """Validated operator names from a sequence or a comma-separated string, order kept."""
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [item.strip() for item in items]
    if not items or any(not item for item in items):
        raise ValueError(f"empty operator name in {names!r}")
    for item in items:
        get(item)
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"operators listed more than once: {', '.join(repeated)}")
    return tuple(items)


def to_numpy(name: str) -> Callable[..., np.ndarray]:
    """The numpy form of ``name``."""
    return get(name).numpy


def to_torch(name: str) -> Callable[..., torch.Tensor]:
    """The torch form of ``name``."""
    return get(name).torch


def to_sympy(name: str) -> Callable[..., sympy.Expr]:
    """The sympy form of ``name``."""
    return get(name).sympy


_PROBES = (0.0, -0.0, 1.0, -1.0, 2.5, -7.0, DIV_EPS, -DIV_EPS, 1e-300, -1e-300,
           1e300, -1e300, LIMIT, -LIMIT)
_SCALAR_PROBES = (0.0, -1.0, 1e300)


def _probe_columns(arity: int) -> list[np.ndarray]:
    """Every combination of the probe values, one float64 column per argument."""
    grid = np.array(list(itertools.product(_PROBES, repeat=arity)), dtype=np.float64)
    return [grid[:, i] for i in range(arity)]


def _check_values(op: Operator, form: str, out: object, shape: tuple[int, ...]) -> None:
    values = out.detach().numpy() if isinstance(out, torch.Tensor) else out
    if not isinstance(values, np.ndarray):
        raise ValueError(f"operator {op.name!r}: {form} form returned {type(out).__name__}, "
                         "not an array")
    if values.shape != shape:
        raise ValueError(f"operator {op.name!r}: {form} form returned shape {values.shape}, "
                         f"expected {shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"operator {op.name!r}: {form} form is not closed: non-finite output "
                         "on zeros, negatives, tiny or huge inputs")
    if np.any(np.abs(values) > LIMIT):
        raise ValueError(f"operator {op.name!r}: {form} form leaves [-LIMIT, LIMIT]; "
                         "saturate its output")


def check_closure(op: Operator) -> None:
    """Raise ValueError unless ``op``'s numpy and torch forms are closed.

    Closed: on every combination of zeros, +-1, negatives, +-DIV_EPS, tiny (1e-300) and huge
    (+-1e300) arguments, and with all but one argument a scalar (gplearn's constants), each form
    returns a finite array of the broadcast shape within +-LIMIT, and the numpy form raises no
    overflow, division or invalid-value floating-point error (underflow is fine).
    """
    if op.arity < 1:
        raise ValueError(f"operator {op.name!r}: arity must be at least 1, got {op.arity}")
    for kind, template in (("infix", op.infix), ("python", op.python)):
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field}
        if fields != {str(i) for i in range(op.arity)}:
            raise ValueError(f"operator {op.name!r}: {kind} {template!r} must use each of "
                             f"{{0}}..{{{op.arity - 1}}}")
    if any(not 0 <= i < op.arity for i in op.grad_args):
        raise ValueError(f"operator {op.name!r}: grad_args out of range for arity {op.arity}")
    columns = _probe_columns(op.arity)
    shape = columns[0].shape
    tensors = [torch.from_numpy(c) for c in columns]
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            _check_values(op, "numpy", op.numpy(*columns), shape)
            for i, scalar in itertools.product(range(op.arity), _SCALAR_PROBES):
                args = [columns[i] if j == i else scalar for j in range(op.arity)]
                _check_values(op, "numpy", op.numpy(*args), shape)
    except FloatingPointError as error:
        raise ValueError(f"operator {op.name!r}: numpy form raised a floating-point error "
                         f"({error}); compute it under np.errstate") from None
    _check_values(op, "torch", op.torch(*tensors), shape)
    for i, scalar in itertools.product(range(op.arity), _SCALAR_PROBES):
        args = [tensors[i] if j == i else torch.tensor(scalar, dtype=torch.float64)
                for j in range(op.arity)]
        _check_values(op, "torch", op.torch(*args), shape)


def gplearn_function(name: str) -> _Function:
    """``name`` as a gplearn function node (picklable: it refers to a module-level function)."""
    from gplearn.functions import make_function

    op = get(name)
    return make_function(function=op.numpy, name=op.name, arity=op.arity, wrap=False)


def gplearn_function_set(names: str | Iterable[str] = DEFAULT_FUNCTION_SET
                         ) -> tuple[_Function, ...]:
    """gplearn function nodes for ``names`` (see :func:`resolve`), for ``function_set=``."""
    return tuple(gplearn_function(name) for name in resolve(names))


for _op in OPERATORS.values():
    check_closure(_op)
