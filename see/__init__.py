"""Operators and object relations for symbolic policies, in numpy, torch and sympy forms.

See :mod:`see.operators` for the table, the semantics of each operator and the gplearn adapters.
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
