"""Precision, memory format and compilation: gradients through gradients stay fp32 under bf16 autocast,
bf16 falls back to fp32 where the hardware lacks it, and the settings reach the run directory."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from backdoorlab import numerics
from backdoorlab.builders import build_model, build_trainer
from backdoorlab.curvature.measure import CurvatureSettings, measure_curvature
from backdoorlab.data.digits import load_digits
from backdoorlab.defenses.fip import FIP
from backdoorlab.defenses.i_bau import IBAU
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.preact_resnet import preact_resnet18
from backdoorlab.purification_run import cached_model_dir, purify
from backdoorlab.training_run import train_backdoor

needs_bf16 = pytest.mark.skipif(not numerics.bf16_supported("cpu"), reason="this CPU has no bf16 kernels")


def small_model(seed: int = 0, channels_last: bool = False) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(preact_resnet18(num_classes=10, width=8), [0.5] * 3, [0.25] * 3, channels_last=channels_last).train()


def batch(n: int = 12):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def value_and_grads(fn, model, autocast: bool = False):
    """``fn()`` (under bf16 autocast with ``autocast``) and its gradients, taken outside autocast as Lightning does."""
    torch.manual_seed(0)  # the same probes every call
    value = under_bf16(fn) if autocast else fn()
    grads = torch.autograd.grad(value, [p for p in model.parameters()], allow_unused=True, materialize_grads=True)
    return value.detach(), grads


def under_bf16(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn()


def assert_equal_in_fp32(fn, model):
    """``fn``'s value and gradients are fp32 and identical with or without an enclosing bf16 autocast."""
    plain = value_and_grads(fn, model)
    mixed = value_and_grads(fn, model, autocast=True)
    assert mixed[0].dtype == torch.float32 and torch.equal(plain[0], mixed[0])
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(plain[1], mixed[1]))


def test_autocast_reaches_the_first_order_terms_so_the_fp32_regions_are_not_vacuous():
    model, (x, y) = small_model(), batch()
    assert under_bf16(lambda: model(x)).dtype == torch.bfloat16


def test_fips_suppressor_runs_in_fp32_under_bf16_autocast():
    model, (x, y) = small_model(), batch()
    fip = FIP(eta_f=0.01)
    assert_equal_in_fp32(lambda: fip.suppressor(model, x, y), model)


def test_i_baus_hypergradient_runs_in_fp32_under_bf16_autocast():
    model, (x, y) = small_model(), batch()
    defense = IBAU(portion=1.0, fixed_point_steps=2)
    defense.prepare(model, list(zip(x, y.tolist())))
    defense.round_steps, defense.calls, defense.delta = 10**9, 1, 0.1 * torch.ones(1, 3, 8, 8)

    def loss():
        defense.calls = 1
        return defense.loss(model, x, y)[0]

    assert_equal_in_fp32(loss, model)


def test_the_curvature_runs_in_fp32_under_bf16_autocast():
    model, (x, y) = small_model(), batch()
    model.eval()
    settings = CurvatureSettings(batch_size=6, top_k=1, power_max_iter=5, trace_max_probes=3)
    plain, mixed = measure_curvature(model, x, y, settings), under_bf16(lambda: measure_curvature(model, x, y, settings))
    assert plain["lambda_max"] == mixed["lambda_max"] and plain["trace"] == mixed["trace"]


def test_bf16_falls_back_to_fp32_with_one_line_where_the_hardware_lacks_it(monkeypatch, caplog):
    monkeypatch.setattr(numerics, "bf16_supported", lambda accelerator: False)
    monkeypatch.setattr(numerics, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="backdoorlab.numerics"):
        assert numerics.resolve_precision("bf16-mixed", "cpu") == "32-true"
        assert numerics.resolve_precision("bf16-mixed", "cpu") == "32-true"
        assert numerics.resolve_precision("32-true", "cpu") == "32-true"
    assert [r.getMessage() for r in caplog.records] == [
        "trainer.precision=bf16-mixed: this CPU has no native bf16 support; running in fp32 (32-true)"]
    assert numerics.numerics({"precision": "bf16-mixed"})["precision"] == "32-true"


def test_the_trainer_gets_lightnings_precision_and_none_of_backdoorlabs_keys(make_config):
    cfg = make_config("train", ["trainer.precision=bf16-mixed", "trainer.channels_last=true", "trainer.compile=true"])
    trainer = build_trainer(cfg)
    expected = "bf16-mixed" if numerics.bf16_supported("cpu") else "32-true"
    assert trainer.precision == expected
    model = build_model(cfg, load_digits(image_size=8))
    conv = model.net.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_channels_last_computes_what_the_contiguous_model_computes():
    x, y = batch()
    plain, nhwc = small_model(), small_model(channels_last=True)
    assert torch.allclose(plain(x), nhwc(x), atol=1e-5)
    fip = FIP(eta_f=0.01)
    traces = []
    for model in (plain, nhwc):
        torch.manual_seed(0)  # the same probes
        traces.append(fip.suppressor(model, x, y))
    assert torch.allclose(*traces, rtol=1e-4)


@needs_bf16
def test_a_bf16_channels_last_run_records_its_numerics_and_saves_plain_weights(make_config, tmp_path):
    fast = ["trainer.precision=bf16-mixed", "trainer.channels_last=true", "model.width=8"]  # width 4 NHWC backward crashes torch 2.14 on the CPU
    trained = tmp_path / "t"
    metrics = train_backdoor(make_config("train", ["attack=blend", *fast]), trained)
    run = json.loads((trained / "run.json").read_text())
    assert run["numerics"] == {"precision": "bf16-mixed", "channels_last": True, "compile": False}
    weights = load_file(str(trained / "model.safetensors"))
    assert all(w.is_contiguous() and w.dtype in (torch.float32, torch.int64) for w in weights.values())
    assert 0 <= metrics["acc"] <= 100
    result = purify(make_config("purify", [f"checkpoint={trained}", "defense=fip", *fast]), tmp_path / "p")
    assert result["after"]["acc"] >= 0 and (tmp_path / "p" / "model.safetensors").is_file()
    # a model trained in bf16 is cached apart from the fp32 one; a fallback to fp32 shares the fp32 key
    assert cached_model_dir(make_config("purify", fast)) != cached_model_dir(make_config("purify", []))
    assert cached_model_dir(make_config("purify", ["trainer.channels_last=false"])) == cached_model_dir(make_config("purify", []))


@pytest.mark.slow  # inductor compiles for half a minute on two cores
def test_a_compiled_training_run_computes_what_the_eager_run_computes(make_config, tmp_path):
    runs = {}
    for compile in ("false", "true"):  # three steps: the fused kernels round differently, and training amplifies that
        overrides = ["attack=badnets", "seed=3", f"trainer.compile={compile}", "+trainer.limit_train_batches=3"]
        train_backdoor(make_config("train", overrides), tmp_path / compile)
        runs[compile] = load_file(str(tmp_path / compile / "model.safetensors"))
    for key, eager in runs["false"].items():
        assert torch.allclose(runs["true"][key], eager, atol=1e-5, rtol=1e-4), key
