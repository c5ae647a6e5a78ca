"""A forest as a torch module: constants are one ``nn.Parameter``, operators come from the table.

``TorchForest(trees)(X)`` equals :func:`diffses.policy.evaluate` of each tree (float64 by
default, so the comparisons of ``gt``, ``lt``, ``ite`` fall the same way) and back-propagates
into every constant; :meth:`TorchForest.trees` writes the trained constants back into tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gplearn_custom.forest import Forest, Token, with_constants
from see import operators as ops

_OP, _FEATURE, _CONST = 0, 1, 2


class TorchForest(nn.Module):
    """One tree per action; ``forward`` maps (B, F) features to (B, A) logits."""

    def __init__(self, trees: Sequence[Sequence[Token]], dtype: torch.dtype = torch.float64):
        super().__init__()
        self.template: Forest = [[dict(tok) for tok in tree] for tree in trees]
        values: list[float] = []
        self._programs: list[list[tuple[int, object]]] = []
        for tree in self.template:
            program: list[tuple[int, object]] = []
            for tok in tree:  # constants numbered in token order, as forest.constants has them
                if "f" in tok:
                    program.append((_OP, ops.get(tok["f"])))
                elif "x" in tok:
                    program.append((_FEATURE, int(tok["x"])))
                else:
                    program.append((_CONST, len(values)))
                    values.append(float(tok["c"]))
            self._programs.append(program[::-1])  # postfix: operands before their operator
        self.constants = nn.Parameter(torch.tensor(values, dtype=dtype))  # (C,)

    @property
    def n_actions(self) -> int:
        return len(self._programs)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, A) logits."""
        X = X.to(self.constants.dtype)
        batch = X.shape[0]
        outputs = []
        for program in self._programs:
            stack: list[torch.Tensor] = []
            for kind, item in program:
                if kind == _FEATURE:
                    stack.append(X[:, item])                              # (B,)
                elif kind == _CONST:
                    stack.append(self.constants[item].expand(batch))      # (B,)
                else:
                    args = [stack.pop() for _ in range(item.arity)]
                    stack.append(item.torch(*args))                       # (B,)
            outputs.append(stack[0])
        return torch.stack(outputs, dim=1)                                # (B, A)

    def trees(self) -> Forest:
        """The forest with the module's current constants written back."""
        return with_constants(self.template, self.constants.detach().cpu().tolist())
