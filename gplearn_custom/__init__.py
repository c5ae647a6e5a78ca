"""Our genetic-programming engine for forests of expressions with differentiable constants."""
