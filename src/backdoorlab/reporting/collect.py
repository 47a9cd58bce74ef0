"""Gather purification runs, or training runs, (``metrics.json`` + ``run.json``) below a folder into one table."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from backdoorlab import runs
from backdoorlab.config import flatten_config
from backdoorlab.metrics import defense_effectiveness_rating
from backdoorlab.reporting.papers import published
from backdoorlab.reporting.table import render

COLUMNS = ["attack", "target", "position", "seed", "defense", "settings", "ACC before", "ASR before",
           "ACC after", "ASR after", "defense s", "run"]
# Defense settings worth showing in a table (the rest are the shared budget).
SHOWN_SETTINGS = ("eta_f", "eta_r", "retainer", "retainer_reference", "lr", "steps", "schedule", "decay_fraction",
                  "average_fraction", "samples_per_class", "train_mode", "suppressor_every", "suppressor_batch", "suppressor_scale", "probes",
                  "probe_space", "mixup", "mask_l1", "threshold", "max_pruned_fraction", "layers", "epochs", "optimizer")
# a setting at its default or "off" value is not shown (runs from before it existed match)
OFF_VALUES = {"decay_fraction": 0.3, "average_fraction": 0.0, "train_mode": True, "suppressor_every": 1, "mixup": True,
              "optimizer": "sgd", "mask_l1": 0.001, "layers": ["*"], "suppressor_scale": "absolute", "probes": 1,
              "probe_space": "parameters", "threshold": 0.2, "max_pruned_fraction": 1.0, "retainer_reference": "student"}
SUPPRESSOR_SETTINGS = ("suppressor_every", "suppressor_batch", "suppressor_scale", "probes", "probe_space")  # meaningless without a suppressor (eta_f = 0)


def _shown_settings(defense: dict) -> str:
    """The defense's settings worth a table column, as ``key=value`` words (``steps`` not where ``epochs``
    replaces it)."""
    no_suppressor = defense.get("eta_f") == 0
    unused = set(SUPPRESSOR_SETTINGS if no_suppressor else ()) | ({"steps"} if defense.get("epochs") is not None else set())
    def word(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    return " ".join(f"{k}={word(defense[k])}" for k in SHOWN_SETTINGS
                    if defense.get(k) is not None and defense[k] != OFF_VALUES.get(k)
                    and k not in unused)


CURVATURE_CSV = "curvature.csv"  # written by lightning.curvature_log.CurvatureLog (curvature_every_epochs / _steps)


def read_curvature_rows(path: str | Path) -> list[dict]:
    """The rows of a ``curvature.csv``: epoch and step as ints, lambda_max, the trace, its standard
    error and the seconds the measurement took as floats."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k in ("epoch", "step") else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def _curvature_along(run_dir: Path) -> list[dict]:
    """The curvature a run measured along its way (its ``curvature.csv``; empty without one)."""
    path = run_dir / CURVATURE_CSV
    return read_curvature_rows(path) if path.is_file() else []


def _finished_runs(root: str | Path, kind: str) -> Iterator[tuple[str, dict, dict]]:
    """``(run directory relative to root, run.json, metrics.json)`` of every run of ``kind``
    ("train" or "purify") below ``root`` that wrote its metrics."""
    for metrics_file in Path(root).rglob(runs.METRICS_FILE):
        run_dir = metrics_file.parent
        if not runs.is_run_dir(run_dir):
            continue
        run = runs.read_run(run_dir)
        if run.get("kind") == kind:
            yield str(run_dir.relative_to(root)) if run_dir != Path(root) else ".", run, json.loads(metrics_file.read_text())


def collect_purification_runs(root: str | Path) -> list[dict]:
    """One dict per finished purification run directory below ``root``, sorted by attack, seed, defense."""
    rows = []
    for where, run, metrics in _finished_runs(root, "purify"):
        if "after" not in metrics:
            continue
        cfg = run["config"]
        defense = cfg["defense"]
        curvature = _curvature_along(Path(root) / where)
        rows.append({
            "dataset": cfg["dataset"]["name"],
            "attack": run["attack_name"],
            "target": cfg["attack"].get("target_label"),
            "position": cfg["attack"].get("position", "-"),
            **training_variant(cfg),
            "seed": cfg["seed"],
            "purification seed": cfg.get("purification_seed", cfg["seed"]),
            "defense": metrics["defense"],
            "settings": " ".join(filter(None, [f"budget={cfg['budget']}" if cfg.get("budget", "shared") != "shared" else "",
                                               _shown_settings(defense)])),
            "ACC before": metrics["before"]["acc"],
            "ASR before": metrics["before"].get("asr"),
            "ACC after": metrics["after"]["acc"],
            "ASR after": metrics["after"].get("asr"),
            # the curvature measured along the run counts in runtime_s, not in the defense's own time
            "defense s": metrics["runtime_s"] - sum(c.get("seconds", 0.0) for c in curvature),
            "budget": (defense.get("lr"), defense.get("steps"), defense.get("batch_size")),
            "eta_f": defense.get("eta_f"),
            "retainer": defense.get("retainer"),
            "mixup": defense.get("mixup", True),
            "peak MB": metrics.get("peak_memory_mb"),
            "trainable": metrics.get("trainable_parameters"),
            "trajectory": metrics.get("trajectory", []),
            "curvature": curvature,
            "der": metrics["der"] if "der" in metrics else _der_of(metrics),
            "config": flatten_config(cfg),
            "run": where,
        })
    return sorted(rows, key=lambda r: (r["attack"], r["target"] or 0, r["position"], r["seed"], r["defense"], r["settings"],
                                      r["purification seed"]))


MODEL_COLUMNS = ["dataset", "attack", "trigger", "target", "position", "seed", "width", "epochs", "numerics", "ACC", "ASR",
                 "train s", "threads", "load", "run"]


def numerics_label(run: dict) -> str:
    """``fp32``, ``bf16``, with ``cl`` (channels_last) and ``compiled`` where they were on (runs before
    run.json recorded it: fp32)."""
    settings = run.get("numerics", {})
    precision = str(settings.get("precision", "32-true"))
    parts = ["bf16" if precision.startswith("bf16") else "fp16" if precision.startswith("16") else "fp32"]
    parts += [name for key, name in (("channels_last", "cl"), ("compile", "compiled")) if settings.get(key)]
    return " ".join(parts)


def collect_training_runs(root: str | Path) -> list[dict]:
    """One dict per finished training run directory below ``root``: the backdoored models of a study."""
    rows = []
    for where, run, metrics in _finished_runs(root, "train"):
        cfg = run["config"]
        rows.append({
            "dataset": cfg["dataset"]["name"],
            "attack": run["attack_name"],
            "trigger": cfg["attack"].get("pattern", "-"),
            "target": cfg["attack"].get("target_label"),
            "position": cfg["attack"].get("position", "-"),
            "seed": cfg["seed"],
            "width": cfg["model"].get("width", "-"),
            "epochs": metrics.get("epochs"),
            "numerics": numerics_label(run),
            "ACC": metrics["acc"],
            "ASR": metrics.get("asr"),
            "train s": metrics.get("train_runtime_s"),
            "threads": metrics.get("threads"),
            "load": metrics.get("load_avg_5min"),
            **training_variant(cfg),
            "config": flatten_config(cfg),
            "run": where,
        })
    return sorted(rows, key=lambda r: (r["dataset"], attack_label(r), r["target"] or 0, r["position"], r["seed"]))


def models_table(rows: list[dict], fmt: str = "text", with_run: bool = False) -> str:
    """One line per trained model: its attack and trigger, numerics, ACC, ASR and training time, with
    the CPU threads and the machine's 5-minute load average as training ended (about the thread
    count on an otherwise idle machine). The attack is named as in the attack tables (Troj-all as
    "trojan all2all", "badnets + sam"), so that models of one attack trained otherwise stay apart."""
    columns = MODEL_COLUMNS if with_run else MODEL_COLUMNS[:-1]
    return render(columns, [[attack_label(row) if c == "attack" else row[c] for c in columns] for row in rows], fmt)


TARGET_MAX_ASR, TARGET_MAX_ACC_DROP = 3.0, 2.0  # the purification target of the digits studies
SUMMARY_COLUMNS = ["defense", "settings", "runs", "meet target", "mean ACC drop", "worst ACC drop", "mean ASR after",
                   "worst ASR after"]


def results_table(rows: list[dict], fmt: str = "text", with_run: bool = False) -> str:
    """One line per run; a "purification seed" column after "seed" where some run was purified with
    a seed other than its model's (a sweep over ``purification_seed``)."""
    columns = COLUMNS if with_run else COLUMNS[:-1]
    if any(row["purification seed"] != row["seed"] for row in rows):
        at = columns.index("seed") + 1
        columns = [*columns[:at], "purification seed", *columns[at:]]
    return render(columns, [[row[c] for c in columns] for row in rows], fmt)


def _by_defense_settings(rows, keys: tuple[str, ...] = ("defense", "settings")) -> dict[tuple, list[dict]]:
    """The rows grouped by ``keys`` (default: defense and settings), in order of first appearance:
    one table line each."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def summary_table(rows: list[dict], max_asr: float = TARGET_MAX_ASR, max_acc_drop: float = TARGET_MAX_ACC_DROP,
                  fmt: str = "text") -> str:
    """One line per (defense, settings): on how many runs ASR after <= ``max_asr`` and the ACC drop
    <= ``max_acc_drop`` (the "meet target" column), with mean and worst ACC drop and ASR after."""
    values = []
    for (defense, settings), group in _by_defense_settings(r for r in rows if r["ASR after"] is not None).items():
        drops = [r["ACC before"] - r["ACC after"] for r in group]
        asrs = [r["ASR after"] for r in group]
        met = sum(a <= max_asr and d <= max_acc_drop for a, d in zip(asrs, drops))
        values.append([defense, settings, len(group), f"{met} of {len(group)}", sum(drops) / len(drops), max(drops),
                       sum(asrs) / len(asrs), max(asrs)])
    return render(SUMMARY_COLUMNS, values, fmt)


PAPERS_COLUMNS = ["attack", "defense", "settings", "models", "mean ACC before", "mean ACC after", "mean ACC drop",
                  "mean ASR after", "worst ASR after", "papers: ACC drop / ASR after"]


def papers_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per (attack, defense, settings): our mean ACC before and after, ACC drop and ASR after
    over the models, beside the papers' CIFAR-10 figures for that attack and defense
    (:mod:`backdoorlab.reporting.papers`; "-" where the papers did not run it, FIP's eta_f = 0
    ablation included)."""
    values = []
    groups = _by_defense_settings((r for r in rows if r["ASR after"] is not None), ("attack", "defense", "settings"))
    for (attack, defense, settings), group in sorted(groups.items(), key=lambda kv: kv[0][0]):
        n = len(group)
        before, after = (sum(r[k] for r in group) / n for k in ("ACC before", "ACC after"))
        # FIP's and NFT's ablations are not the papers' methods
        ablation = (defense == "fip" and not group[0]["eta_f"]) or (defense == "nft" and not group[0]["mixup"])
        paper = "; ".join(f"{source}: {drop:.1f} / {asr:.2f}" for source, drop, asr in ([] if ablation else published(attack, defense)))
        values.append([attack, defense, settings, n, before, after, before - after,
                       sum(r["ASR after"] for r in group) / n, max(r["ASR after"] for r in group), paper or None])
    return render(PAPERS_COLUMNS, values, fmt)


def adaptive_name(adaptive: dict | None) -> str | None:
    """The ``adaptive`` choice a model was trained with (its module's name: sam, fip_suppressor), or None."""
    return None if not adaptive else adaptive["_target_"].split(".")[-2]


def training_variant(cfg: dict) -> dict:
    """What tells models of one attack apart in the tables: its ``label mode`` (all2one, all2all) and the
    ``adaptive`` training it had (or None), from a run's config."""
    return {"label mode": cfg.get("attack", {}).get("label_mode", "all2one"), "adaptive": adaptive_name(cfg.get("adaptive"))}


def attack_label(row: dict) -> str:
    """The attack as the papers' tables name its column: all2all attacks get the suffix (Troj-all, Dyn-all), an
    adaptive training its name (badnets + sam)."""
    return row["attack"] + (" all2all" if row["label mode"] == "all2all" else "") + (f" + {row['adaptive']}" if row.get("adaptive") else "")


def attack_table(rows: list[dict], fmt: str = "text") -> str:
    """NFT Table 1's layout: one line per attack (all2all apart), one "ASR / ACC" cell per defense (and
    settings), means over that attack's models; "no defense" is the models before purification."""
    defenses = [key for key in _by_defense_settings(rows) if key[0] != "none"]  # its cells repeat "no defense"
    attacks: dict[str, list[dict]] = {}
    for row in rows:
        attacks.setdefault(attack_label(row), []).append(row)

    def cell(group: list[dict], acc: str, asr: str) -> str | None:
        if not group:
            return None
        mean = lambda key: sum(r[key] for r in group) / len(group)  # noqa: E731
        return f"{mean(asr):.1f} / {mean(acc):.1f}" if group[0][asr] is not None else f"- / {mean(acc):.1f}"

    values = []
    for label, group in attacks.items():
        models = {(r["seed"], r["target"], r["position"]): r for r in group}.values()  # each model's "before" once
        line = [label, len(models), cell(list(models), "ACC before", "ASR before")]
        line += [cell([r for r in group if (r["defense"], r["settings"]) == key], "ACC after", "ASR after") for key in defenses]
        values.append(line)
    columns = ["attack", "models", "no defense"] + [" ".join(filter(None, key)) for key in defenses]
    return render(columns, values, fmt)


ABLATION_COLUMNS = ["attack", "target", "position", "seed", "method", "method ACC / ASR", "ablation ACC / ASR",
                    "method DER", "ablation DER", "better", "dominates"]
# (method, its ablation): FIP against FIP with eta_f = 0, NFT against NFT without MixUp
ABLATIONS = (("fip", lambda r: r["defense"] == "fip" and bool(r["eta_f"]), lambda r: r["defense"] == "fip" and r["eta_f"] == 0),
             ("nft", lambda r: r["defense"] == "nft" and r["mixup"], lambda r: r["defense"] == "nft" and not r["mixup"]))
DOMINANCE_ACC_MARGIN = 1.0  # points of ACC that count as "a smaller drop" in ablation_table's dominance rule


def _der_of(metrics: dict) -> float | None:
    """DER of a run's ``before`` / ``after`` (None without an ASR: a benign model)."""
    if metrics["before"].get("asr") is None or metrics["after"].get("asr") is None:
        return None
    return defense_effectiveness_rating(metrics["before"], metrics["after"])


def _ablation_pairs(rows: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """``(method, method run, ablation run)`` for every method run whose ablation ran on the same model,
    budget (learning rate, steps, batch) and purification seed."""
    def key(r: dict) -> tuple:
        return r["attack"], r["target"], r["position"], r["seed"], r["purification seed"], r["budget"]

    for method, is_method, is_ablation in ABLATIONS:
        ablations = {key(r): r for r in rows if is_ablation(r)}
        for r in (r for r in rows if is_method(r)):
            if key(r) in ablations:
                yield method, r, ablations[key(r)]


def ablation_table(rows: list[dict], max_asr: float = TARGET_MAX_ASR, fmt: str = "text") -> str:
    """One line per model and method with its ablation on the same budget and purification seed:
    both end points, both DERs (BackdoorBench's, in percent), which is better (the one that takes
    ASR to ``max_asr`` or below where the other does not, else the higher DER, "tie" within 0.05),
    and whether the method dominates its ablation: a lower ASR at no lower ACC, or ACC higher by at
    least ``DOMINANCE_ACC_MARGIN`` points at ASR <= ``max_asr``. Then per method, the counts."""
    def cell(r: dict) -> str:
        return f"{r['ACC after']:.1f} / {r['ASR after']:.1f}"

    values, wins = [], {}
    for method, r, a in _ablation_pairs([r for r in rows if r["ASR after"] is not None]):
        purified, a_purified = r["ASR after"] <= max_asr, a["ASR after"] <= max_asr
        der, a_der = r["der"], a["der"]
        better = ("method" if purified else "ablation") if purified != a_purified else (
            "tie" if abs(der - a_der) < 0.05 else "method" if der > a_der else "ablation")
        dominates = ((r["ASR after"] < a["ASR after"] and r["ACC after"] >= a["ACC after"])
                     or (purified and r["ACC after"] >= a["ACC after"] + DOMINANCE_ACC_MARGIN))
        wins.setdefault(method, []).append((better, dominates))
        values.append([r["attack"], r["target"], r["position"], r["seed"], method, cell(r), cell(a), der, a_der, better,
                       "yes" if dominates else "no"])
    table = render(ABLATION_COLUMNS, values, fmt)
    lines = []
    for method, results in wins.items():
        better = [b for b, _ in results]
        lines.append(f"{method} better than its ablation on {better.count('method')} of {len(results)} models "
                     f"(ablation better on {better.count('ablation')}, ties {better.count('tie')}; "
                     f"ASR <= {max_asr:g} first, then DER); dominates it on {sum(d for _, d in results)} of {len(results)} "
                     f"(lower ASR at no lower ACC, or >= {DOMINANCE_ACC_MARGIN:g} point more ACC at ASR <= {max_asr:g})")
    return table + ("\n\n" + "\n".join(lines) if lines else "")


FLATNESS_COLUMNS = ["attack", "target", "position", "seed", "method", "lambda_max start", "lambda_max end: method",
                    "lambda_max end: ablation", "trace start", "trace end: method", "trace end: ablation", "flatter"]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5


def flatness_table(rows: list[dict], last: int = 5, fmt: str = "text") -> str:
    """Does the method end flatter than its ablation? One line per model where both recorded their
    curvature along the run (``curvature_every_steps``): lambda_max and the Hessian trace at the
    start, and at the end as mean +- sd over each run's ``last`` measurements (single estimates are
    noisy); "flatter" names the run whose end means are lower on both, else "mixed"."""
    def end(r: dict, key: str) -> tuple[float, float]:
        return _mean_sd([c[key] for c in r["curvature"][-last:]])

    def cell(mean_sd: tuple[float, float]) -> str:
        return f"{mean_sd[0]:.4g} +- {mean_sd[1]:.2g}"

    values = []
    for method, r, a in _ablation_pairs(rows):
        if not (r["curvature"] and a["curvature"]):
            continue
        lam, lam_a, tr, tr_a = end(r, "lambda_max"), end(a, "lambda_max"), end(r, "trace"), end(a, "trace")
        lower = (lam[0] < lam_a[0], tr[0] < tr_a[0])
        higher = (lam[0] > lam_a[0], tr[0] > tr_a[0])
        flatter = "method" if all(lower) else "ablation" if all(higher) else "mixed"
        values.append([r["attack"], r["target"], r["position"], r["seed"], method, f"{r['curvature'][0]['lambda_max']:.4g}",
                       cell(lam), cell(lam_a), f"{r['curvature'][0]['trace']:.4g}", cell(tr), cell(tr_a), flatter])
    return render(FLATNESS_COLUMNS, values, fmt)


RUNTIME_COLUMNS = ["defense", "settings", "runs", "mean defense s", "mean x ft", "worst x ft"]


def runtime_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per (defense, settings): mean wall time of the defense and its ratio to fine-tuning's
    on the same model (same attack, seed, target, position and purification seed), on the same
    budget (learning rate, steps, batch size) where such a fine-tuning run exists, else on any; runs
    without a fine-tuning run beside them count in the mean time only."""
    def model(r: dict) -> tuple:
        return r["attack"], r["seed"], r["target"], r["position"], r["purification seed"]

    ft_time, ft_time_any = {}, {}
    for row in rows:
        if row["defense"] == "ft":
            ft_time.setdefault((model(row), row["budget"]), row["defense s"])
            ft_time_any.setdefault(model(row), row["defense s"])

    def ft_seconds(r: dict) -> float | None:
        return ft_time.get((model(r), r["budget"]), ft_time_any.get(model(r)))

    values = []
    for (defense, settings), group in _by_defense_settings(rows).items():
        ratios = [r["defense s"] / ft_seconds(r) for r in group if ft_seconds(r)]
        values.append([defense, settings, len(group), sum(r["defense s"] for r in group) / len(group),
                       sum(ratios) / len(ratios) if ratios else None, max(ratios) if ratios else None])
    return render(RUNTIME_COLUMNS, values, fmt)


BENCHMARK_COLUMNS = ["defense", "settings", "runs", "mean ACC after", "mean ACC drop", "mean ASR after", "worst ASR after",
                     "mean defense s", "x fip", "peak MB", "trainable"]


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def benchmark_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per (defense, settings): mean ACC after and drop, mean and worst ASR after, mean wall
    time and its ratio to FIP's (``defense=fip``: suppressor on, KL retainer; on the same model and
    purification seed), peak memory (MB, the run's ``memory_kind``) and trainable tensors' size."""
    def model(r: dict) -> tuple:
        return r["attack"], r["seed"], r["target"], r["position"], r["purification seed"]

    fip_time: dict[tuple, float] = {}
    for row in rows:
        if row["defense"] == "fip" and row["eta_f"] and row["retainer"] in (None, "kl"):
            fip_time.setdefault(model(row), row["defense s"])

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    values = []
    for (defense, settings), group in _by_defense_settings(rows).items():
        asrs = [r["ASR after"] for r in group if r["ASR after"] is not None]
        values.append([defense, settings, len(group), mean([r["ACC after"] for r in group]),
                       mean([r["ACC before"] - r["ACC after"] for r in group]), mean(asrs), max(asrs) if asrs else None,
                       mean([r["defense s"] for r in group]),
                       mean([r["defense s"] / fip_time[model(r)] for r in group if fip_time.get(model(r))]),
                       mean([r["peak MB"] for r in group]), _rounded(mean([r["trainable"] for r in group]))])
    return render(BENCHMARK_COLUMNS, values, fmt)


def trajectory_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per run purified with ``eval_every``: "ACC / ASR" at every evaluated step, then after
    (the end point, after any tail averaging)."""
    rows = [r for r in rows if r["trajectory"]]
    steps = sorted({point["step"] for r in rows for point in r["trajectory"]})
    columns = ["attack", "target", "seed", "defense", "settings", "before", *(f"step {s}" for s in steps), "after"]

    def cell(acc: float, asr: float | None) -> str:
        return f"{acc:.1f} / {'-' if asr is None else f'{asr:.1f}'}"

    values = []
    for r in rows:
        at = {point["step"]: cell(point["acc"], point.get("asr")) for point in r["trajectory"]}
        values.append([r["attack"], r["target"], r["seed"], r["defense"], r["settings"], cell(r["ACC before"], r["ASR before"]),
                       *(at.get(s, "") for s in steps), cell(r["ACC after"], r["ASR after"])])
    return render(columns, values, fmt)


CURVATURE_COLUMNS = ["dataset", "attack", "seed", "model", "ACC", "ASR", "lambda_max", "trace", "trace s.e.", "images",
                     "processes", "threads", "analysis s"]


def purified_label(defense: str, settings: dict) -> str:
    """``after fip``, or ``after fip (eta_f=0)`` / ``after nft (no MixUp)`` for the ablations."""
    if defense == "fip" and settings.get("eta_f") == 0:
        return "after fip (eta_f=0)"
    if defense == "nft" and settings.get("mixup") is False:
        return "after nft (no MixUp)"
    return f"after {defense}"


def collect_curvature_runs(root: str | Path) -> list[dict]:
    """One dict per ``curvature.json`` below ``root`` (``python -m backdoorlab.analyze``), described by
    the run directory of the model it measured: its attack (named as in the attack tables: "badnets + sam"),
    seed and, for a purified model, the defense."""
    rows = []
    for path in sorted(Path(root).rglob("curvature.json")):
        result = json.loads(path.read_text())
        source = Path(result["checkpoint"]).parent
        run = runs.read_run(source) if runs.is_run_dir(source) else {}
        metrics = json.loads((source / runs.METRICS_FILE).read_text()) if (source / runs.METRICS_FILE).is_file() else {}
        scores = metrics.get("after", metrics)
        cfg = run.get("config", {})
        attack = attack_label({"attack": run.get("attack_name", "-"), **training_variant(cfg)})
        rows.append({
            "dataset": cfg.get("dataset", {}).get("name", "-"), "attack": attack, "seed": cfg.get("seed", "-"),
            "model": purified_label(metrics.get("defense", "?"), cfg.get("defense", {})) if run.get("kind") == "purify" else "trained",
            "ACC": scores.get("acc"), "ASR": scores.get("asr"), "lambda_max": result["lambda_max"], "trace": result["trace"],
            "trace s.e.": result.get("trace_std_error"), "images": result["samples"], "processes": result.get("processes", 1),
            "threads": result.get("threads"), "analysis s": result.get("runtime_s"), "run": str(path.parent.relative_to(root)),
        })
    return sorted(rows, key=lambda r: (r["dataset"], r["attack"] != "benign", r["attack"], str(r["seed"]), r["model"] != "trained", r["model"]))


def curvature_table(rows: list[dict], fmt: str = "text") -> str:
    """One line per analysed model: its ACC / ASR, lambda_max and the trace with its standard error."""
    return render(CURVATURE_COLUMNS, [[row[c] for c in CURVATURE_COLUMNS] for row in rows], fmt)
