"""The study report's main table: runs grouped by dataset, attack, defense and the settings that differ,
with mean +- std over seeds, target labels, trigger positions and purification seeds."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from backdoorlab import runs
from backdoorlab.reporting.collect import attack_label, collect_purification_runs, collect_training_runs
from backdoorlab.reporting.table import Stat, render

# What a row is averaged over (a model's draw and the purification's seed), and what never names a setting
# (where files lie, the table of every budget a defense knows).
AVERAGED_KEYS = ("seed", "purification_seed", "attack.target_label", "attack.position")
IGNORED_SUFFIXES = ("path", "_dir", "cache", "masks", "checkpoint")
IGNORED_PREFIXES = ("defense.budgets.", "dataset.source.")
TRAINED = "none (trained)"  # the defense column of a trained model's row
GROUP_COLUMNS = ["dataset", "attack", "defense", "settings", "runs", "models", "ACC before", "ACC after", "ASR after", "DER",
                 "seconds", "peak MB"]


def _is_setting(key: str) -> bool:
    return (key not in AVERAGED_KEYS and not key.endswith(IGNORED_SUFFIXES)
            and not any(key.startswith(p) for p in IGNORED_PREFIXES))


def differing_settings(configs: list[dict[str, object]], prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """The flattened config keys that take more than one value among ``configs`` (a key a config lacks, from a
    run older than the key, does not count) and start with one of ``prefixes``, leaving out what rows are averaged
    over and where files lie.
    Where ``budget`` differs, the keys that the budget decides (one value per budget) are left out too."""
    values: dict[str, set] = {}
    for config in configs:
        for key, value in config.items():
            if _is_setting(key) and key.startswith(prefixes):
                values.setdefault(key, set()).add(repr(value))
    keys = sorted(k for k, v in values.items() if len(v) > 1)
    if "budget" in keys:
        def decided(key: str) -> bool:
            per_budget: dict[object, set] = {}
            for config in configs:
                if key in config:
                    per_budget.setdefault(config.get("budget"), set()).add(repr(config[key]))
            return all(len(v) == 1 for v in per_budget.values())

        keys = ["budget"] + [k for k in keys if k != "budget" and not decided(k)]
    return keys


def _settings_word(key: str, value) -> str:
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"{key.removeprefix('defense.')}={shown}"


def study_rows(roots: Iterable[str | Path]) -> list[dict]:
    """Every finished purification and training run below the ``roots``, as rows with a flattened ``config``
    and the columns of the group table (a trained model: defense ``none (trained)``, its ACC and ASR as
    "after", its training time as seconds)."""
    rows = []
    for root in roots:
        for r in collect_purification_runs(root):
            rows.append({**r, "label": attack_label(r), "root": str(root), "DER": r["der"], "seconds": r["defense s"]})
        for r in collect_training_runs(root):
            rows.append({**r, "label": attack_label(r), "defense": TRAINED, "root": str(root),
                         "ACC before": None, "ACC after": r["ACC"], "ASR after": r["ASR"], "DER": None, "seconds": r["train s"],
                         "peak MB": None, "purification seed": None})
    return rows


def group_rows(rows: list[dict], prefixes: tuple[str, ...] = ("",)) -> list[tuple[tuple, str, list[dict]]]:
    """``((dataset, attack, defense), settings, runs)`` per table line: the rows of one dataset, attack and
    defense, split by the values of the settings that differ among them (:func:`differing_settings` of the keys
    that start with one of ``prefixes``)."""
    by_method: dict[tuple, list[dict]] = {}
    for row in rows:
        by_method.setdefault((row["dataset"], row["label"], row["defense"]), []).append(row)
    lines = []
    for key in sorted(by_method, key=lambda k: (k[0], k[1], k[2] != TRAINED, k[2] != "none", k[2])):
        group = by_method[key]
        keys = differing_settings([r["config"] for r in group], prefixes)
        split: dict[str, list[dict]] = {}
        for row in group:
            settings = " ".join(_settings_word(k, row["config"][k]) for k in keys if k in row["config"])
            split.setdefault(settings, []).append(row)
        lines += [(key, settings, split[settings]) for settings in sorted(split)]
    return lines


def groups_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per dataset, attack, defense and differing settings: the number of runs and of distinct models
    (seed, target, position), then mean +- std of ACC before and after, ASR after, DER, seconds (the defense's
    wall time, a trained model's training time) and peak memory."""
    values = []
    for (dataset, attack, defense), settings, group in group_rows(rows):
        models = {(r["seed"], r["target"], r["position"]) for r in group}
        values.append([dataset, attack, defense, settings, len(group), len(models),
                       *(Stat.of([r[c] for r in group]) for c in GROUP_COLUMNS[6:])])
    return render(GROUP_COLUMNS, values, fmt)


def incomplete_runs(roots: Iterable[str | Path]) -> list[dict]:
    """The run directories below ``roots`` that did not finish: a Hydra job folder (``.hydra/``) without a
    complete run (run.json and metrics.json with results), with why, from metrics.json's ``error`` (a run that
    diverged) or the last line of its log."""
    found = []
    for root in roots:
        for hydra in sorted(Path(root).rglob(".hydra")):
            job = hydra.parent
            metrics_file = job / runs.METRICS_FILE
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
            if (runs.is_run_dir(job) and metrics is not None and "error" not in metrics) or (job / "curvature.json").is_file():
                continue
            reason = "no run.json or metrics.json: interrupted, or failed before training"
            if metrics is not None:
                reason = "failed: " + str(metrics.get("error", "metrics without run.json"))
            logs = sorted(job.glob("*.log"))
            last = next((line for log in logs for line in reversed(log.read_text(errors="replace").splitlines()) if line.strip()), "")
            found.append({"run": str(job), "reason": reason, "last log line": last[:160]})
    return found


def incomplete_table(found: list[dict], fmt: str = "text") -> str:
    columns = ["run", "reason", "last log line"]
    return render(columns, [[f[c] for c in columns] for f in found], fmt)

