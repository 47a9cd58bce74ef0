"""Backdoor attacks: a trigger (pure tensor function) plus the poisoning rule (which samples, which labels)."""

from backdoorlab.attacks.base import Attack, PatternTrigger

__all__ = ["Attack", "PatternTrigger"]
