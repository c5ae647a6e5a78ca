"""The expression language of symbolic policies, a leaf package (it imports no other package
of this project).

:mod:`see.operators` is the table of operators and object relations in numpy, torch and sympy
forms, with their semantics and the gplearn adapters; :mod:`see.tree` is the expression tree
(prefix tokens, checks, evaluation, readable forms, sympy, plain Python, gplearn programs).
"""

from see.operators import (
    DEFAULT_FUNCTION_SET,
    DIV_EPS,
    LIMIT,
    OPERATORS,
    Operator,
    all_names,
    check_closure,
    get,
    gplearn_function,
    gplearn_function_set,
    resolve,
    to_numpy,
    to_sympy,
    to_torch,
)

__all__ = [
    "DEFAULT_FUNCTION_SET", "DIV_EPS", "LIMIT", "OPERATORS", "Operator", "all_names",
    "check_closure", "get", "gplearn_function", "gplearn_function_set", "resolve",
    "to_numpy", "to_sympy", "to_torch",
]
