"""The one exception type users see for bad input: a single clear sentence, raised before training."""


class ConfigError(ValueError):
    """Bad user input (config value, file or data) detected before any training starts."""


class DivergenceError(RuntimeError):
    """An optimisation produced a non-finite loss; the last good weights were kept."""


class AttackFailed(RuntimeError):
    """An attack's own preparation did not reach what defines it (a hidden code its decoder cannot read):
    the run stops before the classifier trains on a trigger that is not the attack's."""
