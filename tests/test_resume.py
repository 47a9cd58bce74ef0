"""An interrupted training run continues from its last finished epoch and ends where an
uninterrupted run ends (CPU, same thread count: bit for bit)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from backdoorlab.errors import ConfigError
from backdoorlab.reporting.collect import read_curvature_rows
from backdoorlab.lightning.resume import RESUME_FILE
from backdoorlab.lightning.training_module import BackdoorTrainingModule
from backdoorlab.training_run import train_backdoor

TWO_EPOCHS = ["attack=blend", "seed=4", "training.epochs=3", "training.eval_every_epochs=2"]


def interrupt_at_epoch(monkeypatch, epoch: int, error: BaseException) -> None:
    """Make training stop as Ctrl-C (or a crash) would, at the start of ``epoch``."""

    def stop(module, batch, batch_idx):
        if module.current_epoch == epoch:
            raise error

    monkeypatch.setattr(BackdoorTrainingModule, "on_train_batch_start", stop, raising=False)


def train_until_a_power_cut(make_config, overrides: list[str], out, monkeypatch) -> None:
    """Train into ``out`` and stop as a power cut would, at the start of epoch 2 (its resume state left behind)."""
    interrupt_at_epoch(monkeypatch, 2, RuntimeError("power cut"))
    with pytest.raises(RuntimeError):
        train_backdoor(make_config("train", overrides), out)
    monkeypatch.undo()


def assert_same_files(a_dir, b_dir, names=("model.safetensors", "trigger.safetensors")) -> None:
    for name in names:
        assert (a_dir / name).is_file() == (b_dir / name).is_file(), name
        if name != "model.safetensors" and not (a_dir / name).is_file():  # an attack with nothing to store (BppAttack)
            continue
        a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("power cut")], ids=["ctrl-c", "crash"])
def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(make_config, tmp_path, monkeypatch, error):
    whole = tmp_path / "whole"
    train_backdoor(make_config("train", TWO_EPOCHS), whole)
    assert not (whole / RESUME_FILE).exists()  # a finished run keeps no resume state

    broken = tmp_path / "broken"
    interrupt_at_epoch(monkeypatch, 2, error)
    with pytest.raises((SystemExit, RuntimeError)):  # Lightning turns Ctrl-C into exit status 1
        train_backdoor(make_config("train", TWO_EPOCHS), broken)
    assert (broken / RESUME_FILE).is_file() and (broken / "model.interrupted.safetensors").is_file()
    assert not (broken / "metrics.json").exists()
    monkeypatch.undo()

    metrics = train_backdoor(make_config("train", [f"resume={broken}"]), broken)
    expected = json.loads((whole / "metrics.json").read_text())
    assert metrics["acc"] == expected["acc"] and metrics["asr"] == expected["asr"] and metrics["resumed"] is True
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (broken / RESUME_FILE).exists() and not (broken / "model.interrupted.safetensors").exists()


def test_a_resumed_run_keeps_the_metrics_its_first_part_logged(make_config, tmp_path, monkeypatch):
    """Lightning's CSVLogger deletes the metrics.csv it finds; the framework's appends, so the curve is whole."""
    logged = [*TWO_EPOCHS, "logger=csv", "training.eval_every_epochs=1"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    rows = lambda run: list(csv.DictReader((run / "csv" / "metrics.csv").open()))  # noqa: E731
    train_backdoor(make_config("train", [*logged, f"paths.output_dir={whole}"]), whole)
    interrupt_at_epoch(monkeypatch, 2, RuntimeError("power cut"))
    with pytest.raises(RuntimeError):
        train_backdoor(make_config("train", [*logged, f"paths.output_dir={broken}"]), broken)
    monkeypatch.undo()
    first_part = rows(broken)
    assert {row["epoch"] for row in first_part if row.get("val/acc")} == {"0", "1"}
    train_backdoor(make_config("train", [*logged, f"resume={broken}", f"paths.output_dir={broken}"]), broken)
    assert rows(broken)[:len(first_part)] == first_part
    epochs = lambda run: [row["epoch"] for row in rows(run) if row.get("val/acc")]  # noqa: E731
    assert epochs(broken) == epochs(whole) == ["0", "1", "2"]


def test_starting_a_different_config_on_an_interrupted_run_directory_is_refused(make_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at_epoch(monkeypatch, 1, RuntimeError("crash"))
    with pytest.raises(RuntimeError):
        train_backdoor(make_config("train", TWO_EPOCHS), out)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=f"holds an interrupted training run of another config; continue it with resume={out}"):
        train_backdoor(make_config("train", [*TWO_EPOCHS, "seed=5"]), out)
    # the same config started on the same directory (hydra.run.dir, the model cache) continues it, wherever its data
    # lie (a moved project, a worktree: dataset.path, cache_dir, download ... are not the model; digits has download)
    assert train_backdoor(make_config("train", [*TWO_EPOCHS, "dataset.download=true"]), out)["resumed"] is True


def test_resume_refuses_a_finished_run_and_a_directory_that_is_not_a_run(make_config, tmp_path):
    train_backdoor(make_config("train", []), tmp_path / "done")
    with pytest.raises(ConfigError, match="has finished; there is nothing to resume"):
        train_backdoor(make_config("train", [f"resume={tmp_path / 'done'}"]), tmp_path / "done")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a training run directory"):
        train_backdoor(make_config("train", [f"resume={tmp_path / 'empty'}"]), tmp_path / "empty")


def test_resume_sets_the_run_directory(make_config, tmp_path):
    cfg = make_config("train", [f"resume={tmp_path / 'old'}"])
    assert cfg.hydra.run.dir == str(tmp_path / "old")
    assert make_config("train", []).hydra.run.dir.startswith(str(tmp_path / "outputs" / "train"))


def test_a_resumed_run_keeps_its_curvature_curve_and_ends_with_the_uninterrupted_ones(make_config, tmp_path, monkeypatch):
    logged = [*TWO_EPOCHS, "curvature_every_epochs=1", "analysis.samples=16", "analysis.batch_size=16",
              "analysis.trace_max_probes=3", "analysis.power_max_iter=5"]
    whole = tmp_path / "whole"
    train_backdoor(make_config("train", logged), whole)
    broken = tmp_path / "broken"
    interrupt_at_epoch(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(SystemExit):
        train_backdoor(make_config("train", logged), broken)
    monkeypatch.undo()
    assert len((broken / "curvature.csv").read_text().splitlines()) == 1 + 3  # the start and two epochs
    train_backdoor(make_config("train", [f"resume={broken}"]), broken)
    read = lambda run: [{k: v for k, v in row.items() if k != "seconds"} for row in read_curvature_rows(run / "curvature.csv")]  # noqa: E731
    assert read(broken) == read(whole) and len(read(whole)) == 4
    plain = tmp_path / "plain"
    train_backdoor(make_config("train", TWO_EPOCHS), plain)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # measuring the curvature changes nothing in training


@pytest.mark.parametrize("attack", ["input_aware attack.width=4 attack.depth=2 attack.mask_epochs=1",
                                    "lira attack.width=4 attack.depth=2 attack.generator_fraction=0.9",
                                    "fba attack.detox_epochs=1",
                                    "badnets adaptive=fip_suppressor adaptive.every=3", "badnets adaptive=sam", "wanet", "bpp",
                                    "issba attack.width=4 attack.depth=2 attack.encoder_epochs=1 attack.fit_samples=64 attack.min_bit_accuracy=0"],
                         ids=["input_aware", "lira", "fba", "fip_suppressor", "sam", "wanet", "bpp", "issba"])
def test_an_interrupted_run_of_an_attack_with_a_training_state_ends_as_an_uninterrupted_one(make_config, tmp_path,
                                                                                            monkeypatch, attack):
    """Input-aware's and LIRA's networks resume with their optimisers; WaNet's and BppAttack's per-batch draws and
    ISSBA's codec come back as they were. FBA's injector is trained again at every epoch's detoxification round, on
    its pool of clean images: a resumed run must find that pool (it is drawn from the data, not stored) or its last
    epochs train without the rounds. The adaptive suppressor joins every 3rd step of the whole run, counted across
    the restart (an epoch here is not a multiple of 3 steps)."""
    name, *extra = attack.split()
    overrides = [f"attack={name}", *extra, "seed=2", "training.epochs=3", "training.eval_every_epochs=3"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train_backdoor(make_config("train", overrides), whole)
    train_until_a_power_cut(make_config, overrides, broken, monkeypatch)
    train_backdoor(make_config("train", [f"resume={broken}"]), broken)
    assert_same_files(whole, broken)


FITTED = {
    "trojan": ("backdoorlab.attacks.trojan.Trojan", ["attack=trojan", "attack.surrogate.epochs=1", "attack.trigger_steps=20"]),
    "clb": ("backdoorlab.attacks.clb.LabelConsistent", ["attack=clb", "attack.surrogate.epochs=1", "attack.pgd_steps=5"]),
}


@pytest.fixture
def one_thread():
    """PyTorch's CPU backward of a 3x3 convolution on a 1- or 2-pixel input (digits' last stage, at the batch of one
    that Trojan's patch optimisation runs) adds in another order from call to call on more than one thread: two fits
    of the same patch differ in the last bit, and training amplifies it. Bit for bit holds on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("attack", sorted(FITTED))
def test_a_resumed_run_of_an_attack_fitted_on_the_data_takes_what_it_stored_and_ends_as_an_uninterrupted_one(
        make_config, tmp_path, monkeypatch, attack, one_thread):
    """Trojan fits its patch, CLB its perturbed images, on a surrogate trained in the run (on CIFAR-10, half an hour
    to an hour on one thread): a resumed run takes what it stored when it started (``trigger.safetensors``, CLB's
    images in ``fit.safetensors``) instead of fitting again, and ends bit for bit where the whole run ends."""
    target, fitted = FITTED[attack]
    overrides = [*fitted, *TWO_EPOCHS[1:]]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train_backdoor(make_config("train", overrides), whole)
    train_until_a_power_cut(make_config, overrides, broken, monkeypatch)
    assert (broken / "fit.safetensors").is_file() == (attack == "clb")

    def refit(self, train, seed):
        raise AssertionError("a resumed run fitted its trigger again")

    monkeypatch.setattr(f"{target}.fit", refit)
    metrics = train_backdoor(make_config("train", overrides), broken)  # the model cache's way: the same config again
    assert metrics["resumed"] is True
    assert_same_files(whole, broken)
    assert not (broken / "fit.safetensors").exists()  # finished: only what evaluates the model is left


def test_an_interrupted_clb_run_without_its_perturbed_images_is_not_resumed_on_clean_ones(make_config, tmp_path, monkeypatch):
    overrides = [*FITTED["clb"][1], *TWO_EPOCHS[1:]]
    train_until_a_power_cut(make_config, overrides, tmp_path, monkeypatch)
    (tmp_path / "fit.safetensors").unlink()

    def build_data(*args, **kwargs):
        raise AssertionError("the data set was built before the missing file was found")

    monkeypatch.setattr("backdoorlab.training_run.build_data", build_data)
    with pytest.raises(ConfigError, match="without its fit.safetensors"):
        train_backdoor(make_config("train", overrides), tmp_path)
