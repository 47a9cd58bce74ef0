"""The study report (python -m backdoorlab.report): grouped means +- std, formats, unfinished runs, plots, pages."""

import csv
import io
import json
import math
from pathlib import Path

import pytest

from backdoorlab import report, runs
from backdoorlab.reporting.groups import differing_settings, group_rows, incomplete_runs, study_rows
from backdoorlab.reporting.table import Stat, render


def purified(folder: Path, seed: int, defense: str, acc: float, asr: float, attack: str = "badnets", runtime: float = 10.0,
             **defense_settings) -> None:
    """A finished purification run directory as purify writes it (the parts the report reads)."""
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    config = {"dataset": {"name": "digits", "path": f"/data/{seed}"}, "seed": seed, "purification_seed": seed,
              "attack": {"target_label": seed % 10, "position": "top_left", "label_mode": "all2one"},
              "defense": {"lr": 0.05, "steps": 600, "budgets": {"shared": {"lr": seed}}, **defense_settings}}
    runs.write_json(folder / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "purify", "attack_name": attack, "config": config})
    runs.write_json(folder / runs.METRICS_FILE, {"before": {"acc": 99.0, "asr": 100.0}, "after": {"acc": acc, "asr": asr},
                                                 "runtime_s": runtime, "defense": defense, "peak_memory_mb": 500.0})


def test_stat_is_the_mean_and_sample_standard_deviation():
    s = Stat.of([1.0, 2.0, None, 6.0])
    assert (s.mean, s.n) == (3.0, 3) and s.std == pytest.approx(math.sqrt(7.0))
    assert Stat.of([4.0]).std is None and Stat.of([None]) is None
    assert s.text(1) == "3.0 ± 2.6" and Stat.of([4.0]).text(2) == "4.00"


def test_formats_render_the_same_cells():
    header, rows = ["defense", "ACC"], [["fip", Stat(80.0, 1.25, 3)], ["ft_sam", None]]
    assert render(header, rows).splitlines()[2] == "fip      80.00 ± 1.25"
    assert render(header, rows, "markdown").splitlines()[2] == "| fip | 80.0 ± 1.2 |"
    parsed = list(csv.reader(io.StringIO(render(header, rows, "csv"))))
    assert parsed == [["defense", "ACC mean", "ACC std"], ["fip", "80.0", "1.25"], ["ft_sam", "", ""]]
    latex = render(header, rows, "latex").splitlines()
    assert latex[0] == r"\begin{tabular}{lr}" and r"ft\_sam & - \\" in latex and r"fip & $80.0 \pm 1.2$ \\" in latex
    with pytest.raises(ValueError, match="one of text, markdown, csv, latex"):
        render(header, rows, "html")


def test_settings_that_differ_split_the_groups_and_seeds_do_not(tmp_path):
    for seed in (1, 2, 3):
        purified(tmp_path / f"fip-{seed}", seed, "fip", 80.0 + seed, 2.0 * seed, eta_f=0.2)
        purified(tmp_path / f"abl-{seed}", seed, "fip", 79.0, 10.0, eta_f=0.0)
    purified(tmp_path / "ft", 1, "ft", 70.0, 1.0)
    rows = study_rows([tmp_path])
    lines = group_rows(rows)
    # seed, target label and position vary but are averaged over; paths and the budgets table never count
    assert [(key[2], settings, len(group)) for key, settings, group in lines] == [
        ("fip", "eta_f=0.0", 3), ("fip", "eta_f=0.2", 3), ("ft", "", 1)]
    fip = next(group for key, settings, group in lines if settings == "eta_f=0.2")
    assert Stat.of([r["ACC after"] for r in fip]).mean == pytest.approx(82.0)
    assert Stat.of([r["ASR after"] for r in fip]).std == pytest.approx(2.0)


def test_a_budget_that_differs_hides_the_settings_it_decides():
    configs = [{"budget": "shared", "defense.lr": 0.05, "defense.steps": 600, "defense.eta_f": e} for e in (0.1, 0.2)]
    configs += [{"budget": "authors", "defense.lr": 0.005, "defense.steps": 2000, "defense.eta_f": 0.2}]
    assert differing_settings(configs) == ["budget", "defense.eta_f"]
    # a key from a newer run that older runs lack does not count as differing
    assert differing_settings([{"defense.lr": 0.05}, {"defense.lr": 0.05, "defense.new_knob": 1}]) == []


def test_the_report_prints_means_and_lists_runs_that_did_not_finish(tmp_path, capsys):
    for seed in (1, 2):
        purified(tmp_path / "study" / f"r{seed}", seed, "fip", 80.0 + 2 * seed, 1.0)
    (tmp_path / "study" / "killed" / ".hydra").mkdir(parents=True)
    (tmp_path / "study" / "killed" / "purify.log").write_text("step 100\nKilled\n")
    diverged = tmp_path / "study" / "diverged"
    (diverged / ".hydra").mkdir(parents=True)
    runs.write_json(diverged / runs.METRICS_FILE, {"before": {"acc": 99.0}, "error": "diverged"})
    report.main([str(tmp_path / "study")])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("digits"))
    assert line.split()[:5] == ["digits", "badnets", "fip", "2", "2"] and "83.00 ± 1.41" in line and "10.00" in line
    assert "2 run(s) did not finish" in out and "failed: diverged" in out and "Killed" in out
    assert {Path(f["run"]).name for f in incomplete_runs([tmp_path / "study"])} == {"killed", "diverged"}


def test_trained_models_join_the_table_as_no_defense(tmp_path, capsys):
    model = tmp_path / "zoo" / "m"
    model.mkdir(parents=True)
    config = {"dataset": {"name": "digits"}, "seed": 4, "model": {}, "training": {},
              "attack": {"target_label": 0, "position": "top_left", "label_mode": "all2all"}}
    runs.write_json(model / runs.RUN_FILE, {"format": runs.FORMAT, "kind": "train", "attack_name": "trojan", "config": config})
    runs.write_json(model / runs.METRICS_FILE, {"acc": 97.5, "asr": 93.0, "train_runtime_s": 60.0})
    purified(tmp_path / "zoo" / "p", 4, "ft", 90.0, 3.0)
    report.main([str(tmp_path / "zoo"), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["attack"], r["defense"]) for r in table] == [("badnets", "ft"), ("trojan all2all", "none (trained)")]
    assert table[1]["ACC after mean"] == "97.5" and table[1]["seconds mean"] == "60.0" and table[1]["ACC before mean"] == ""


def test_out_writes_every_format_and_the_plots(tmp_path):
    for seed in (1, 2):
        purified(tmp_path / "s" / f"a{seed}", seed, "fip", 80.0, 1.0)
        metrics = json.loads((tmp_path / "s" / f"a{seed}" / runs.METRICS_FILE).read_text())
        metrics["trajectory"] = [{"step": 100, "acc": 85.0, "asr": 50.0}, {"step": 200, "acc": 80.0, "asr": 1.0}]
        runs.write_json(tmp_path / "s" / f"a{seed}" / runs.METRICS_FILE, metrics)
    report.main([str(tmp_path / "s"), "--out", str(tmp_path / "report")])
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert names == {"report.txt", "report.md", "report.csv", "report.tex", "acc_asr.png", "trajectories.png"}
    assert all((tmp_path / "report" / n).read_bytes()[:4] == b"\x89PNG" for n in names if n.endswith(".png"))
    assert (tmp_path / "report" / "report.tex").read_text().startswith(r"\begin{tabular}")


def test_regenerate_reruns_each_blocks_own_command_and_leaves_blocks_without_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    purified(tmp_path / "runs" / "a", 1, "fip", 98.0, 1.0)
    (tmp_path / "empty").mkdir()
    page = tmp_path / "page.md"
    page.write_text("<!-- e:start -->\n<!-- generated by: python -m backdoorlab.report empty --page page.md --block e -->\n"
                    "kept too\n<!-- e:end -->\n<!-- x:start -->\n<!-- generated by: python -m backdoorlab.report runs --page page.md --block x "
                    "--view summary -->\nSTALE\n<!-- x:end -->\n<!-- y:start -->\n<!-- generated by: python -m "
                    "backdoorlab.report gone --page page.md --block y -->\nkept\n<!-- y:end -->\n")
    report.main(["--regenerate", "page.md"])
    text = page.read_text()
    assert "STALE" not in text and "| fip | lr=0.05 steps=600 | 1 | 1 of 1 |" in text and "kept" in text
    said = capsys.readouterr().out
    assert "block y left as it is: gone not here" in said and "kept too" in text  # a folder without runs: the next block goes on
    assert "block e left as it is: no runs below empty" in said


def test_the_report_goes_to_wandb_as_a_table_and_plots_of_the_study_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    purified(tmp_path / "study_x" / "a", 1, "fip", 98.0, 1.0)
    with pytest.raises(SystemExit, match="give --out too"):
        report.main([str(tmp_path / "study_x"), "--wandb"])
    report.main([str(tmp_path / "study_x"), "--out", str(tmp_path / "rep"), "--wandb"])
    (record,) = [f.read_bytes() for f in (tmp_path / "rep" / "wandb").glob("offline-run-*/*.wandb")]
    assert b"study_x" in record and b"report" in record and b"acc_asr" in record
