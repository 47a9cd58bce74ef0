"""What the entry points share: where the configs are, and turning a ConfigError into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from backdoorlab.config import CONFIG_DIR
from backdoorlab.errors import AttackFailed, ConfigError

__all__ = ["CONFIG_DIR", "run_safely"]
T = TypeVar("T")
log = logging.getLogger("backdoorlab")


def run_safely(job: Callable[[], T]) -> T:
    """Run ``job``; a :class:`ConfigError` or :class:`AttackFailed` is printed as one sentence and exits with status 2."""
    try:
        return job()
    except (ConfigError, AttackFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        log.error("%s", err)
        sys.exit(2)
