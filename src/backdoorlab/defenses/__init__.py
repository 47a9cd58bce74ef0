"""Purification defenses, one per file, all implementing :class:`backdoorlab.defenses.base.Defense`."""

from backdoorlab.defenses.base import Defense

__all__ = ["Defense"]
