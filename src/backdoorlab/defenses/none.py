"""No defense: evaluates the model as it is (the "no defense" row of every table)."""

from __future__ import annotations

from backdoorlab.defenses.base import Defense


class NoDefense(Defense):
    name = "none"

    def __init__(self, **budget):
        budget["steps"] = 0
        super().__init__(**budget)
