"""A forest as a torch module: constants are one ``nn.Parameter``, trees evaluate through
:func:`see.tree.evaluate_torch`.

``TorchForest(trees)(X)`` equals :func:`see.tree.evaluate` of each tree (float64 by default,
so the comparisons of ``gt``, ``lt``, ``ite`` fall the same way) and back-propagates into every
constant; :meth:`TorchForest.trees` writes the trained constants back into tokens.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn

from gplearn_custom.forest import constants, with_constants
from see.tree import Forest, Token, evaluate_torch


class TorchForest(nn.Module):
    """One tree per action; ``forward`` maps (B, F) features to (B, A) logits."""

    def __init__(self, trees: Sequence[Sequence[Token]], dtype: torch.dtype = torch.float64):
        super().__init__()
        self.template: Forest = [[dict(tok) for tok in tree] for tree in trees]
        counts = [sum("c" in tok for tok in tree) for tree in self.template]
        #: each tree's slice of ``constants`` (numbered tree by tree in token order)
        self._bounds = [(end - n, end) for n, end in zip(counts, itertools.accumulate(counts))]
        self.constants = nn.Parameter(torch.tensor(constants(self.template), dtype=dtype))  # (C,)

    @property
    def n_actions(self) -> int:
        return len(self.template)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, A) logits."""
        X = X.to(self.constants.dtype)
        return torch.stack([evaluate_torch(tree, X, self.constants[start:end])
                            for tree, (start, end) in zip(self.template, self._bounds)],
                           dim=1)                                         # (B, A)

    def trees(self) -> Forest:
        """The forest with the module's current constants written back."""
        return with_constants(self.template, self.constants.detach().cpu().tolist())
