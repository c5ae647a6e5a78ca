"""Operators and object relations for symbolic policies, in numpy, torch and sympy forms."""
