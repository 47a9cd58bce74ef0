"""Lightning's CSV logger, kept across a resumed run.

Lightning deletes a ``metrics.csv`` it finds when its logger opens the directory, so a training run continued after
a crash or Ctrl-C (``resume=``, the model cache, a resumed study job) lost the rows of its first part. This logger
appends to the file instead, under its existing header (widened when new metrics appear, as Lightning does). Rows of
an epoch that was interrupted and trained again appear twice, with their ``step``."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, which keeps an existing ``metrics.csv`` and its columns."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(next(csv.reader(file), []))


class AppendingCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` writing through :class:`AppendingExperimentWriter`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
