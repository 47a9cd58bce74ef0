"""Tasks: how a model's outputs are scored against a batch's targets (:mod:`backdoorlab.tasks.base`)."""
