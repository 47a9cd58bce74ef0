"""The defenses' objectives, schedule and divergence guard on small models."""

import math

import pytest
import torch

from backdoorlab.data.augment import BatchAugment
from backdoorlab.defenses.base import Defense
from backdoorlab.defenses.fip import FIP
from backdoorlab.defenses.ft import FineTuning
from backdoorlab.errors import ConfigError
from backdoorlab.models.classifier import ImageClassifier
from backdoorlab.models.preact_resnet import preact_resnet18


def small_model():
    torch.manual_seed(0)
    return ImageClassifier(preact_resnet18(num_classes=4, width=4), (0.5,) * 3, (0.5,) * 3)


def pool(n=16):
    gen = torch.Generator().manual_seed(0)
    return [(torch.rand(3, 8, 8, generator=gen), i % 4) for i in range(n)]


def test_cosine_schedule_in_rounds_to_a_floor_is_the_nft_authors_schedule():
    d = Defense(steps=1000, lr=0.05, schedule="cosine", lr_floor=0.4, schedule_rounds=5)
    rates = [0.05 * d.lr_factor(step) for step in (0, 199, 200, 400, 600, 800, 999)]
    # CosineAnnealingLR(T_max=5, eta_min=0.02) stepped after each of 5 rounds of 200 steps
    assert rates == pytest.approx([0.05, 0.05, 0.04713, 0.03963, 0.03037, 0.02287, 0.02287], abs=1e-5)
    with pytest.raises(ConfigError, match="defense.lr_floor must lie in \\[0, 1\\]"):
        Defense(lr_floor=2)


def test_cosine_schedule_with_a_constant_start():
    d = Defense(steps=100, schedule="cosine", decay_fraction=0.4)
    assert d.lr_factor(0) == 1.0 and d.lr_factor(60) == 1.0
    assert d.lr_factor(80) == pytest.approx(0.5) and d.lr_factor(100) == pytest.approx(0.0, abs=1e-12)
    assert Defense(steps=10, schedule="cosine").lr_factor(5) == pytest.approx(0.5)
    assert Defense(steps=10).lr_factor(9) == 1.0
    with pytest.raises(ConfigError, match="defense.decay_fraction must lie in \\(0, 1\\]"):
        Defense(decay_fraction=0)


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("retainer", ["fisher", "kl"])
def test_fip_terms_vanish_at_the_start_and_grow_when_weights_move(retainer, train_mode):
    model = small_model()
    fip = FIP(eta_f=0.1, eta_r=1.0, retainer=retainer)
    fip.prepare(model, pool())
    x = torch.stack([p[0] for p in pool(8)])
    y = torch.tensor([p[1] for p in pool(8)])
    model.train(train_mode)  # the KL reference runs in the student's BatchNorm mode, so R = 0 in train mode too
    _, terms = fip.loss(model, x, y)
    assert terms["retainer"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["fisher_trace"].item() > 0
    if retainer == "fisher":
        flat = torch.cat([v.flatten() for v in fip.importance.values()])
        assert flat.mean().item() == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _, moved = fip.loss(model, x, y)
    assert moved["retainer"].item() > 1e-4


def test_the_kl_retainers_eval_reference_is_the_deployed_models_prediction_whatever_the_students_mode():
    """``retainer_reference="eval"``: the reference keeps its running statistics while the student trains with batch
    statistics, so R is the KL from the model as deployed to the student in train mode, not 0 at the start."""
    model = small_model()
    with torch.no_grad():  # running statistics far from any batch's: eval and train mode part
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.3)
                m.running_var.fill_(2.0)
    x = torch.stack([p[0] for p in pool(8)])
    y = torch.tensor([p[1] for p in pool(8)])
    fip = FIP(eta_f=0.0, eta_r=1.0, retainer_reference="eval")
    fip.prepare(model, pool())
    model.eval()
    with torch.no_grad():
        deployed = torch.log_softmax(model(x), 1)
    model.train()
    _, terms = fip.loss(model, x, y)
    with torch.no_grad():
        logits = model(x)  # train mode: batch statistics, as in the loss
    expected = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), deployed, log_target=True, reduction="batchmean")
    assert expected.item() > 1e-3
    assert terms["retainer"].item() == pytest.approx(expected.item(), rel=1e-4)
    student = FIP(eta_f=0.0, eta_r=1.0)  # the default reference: in the student's mode
    student.prepare(model, pool())
    assert student.loss(model, x, y)[1]["retainer"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="defense.retainer_reference must be one of student, eval"):
        FIP(retainer_reference="train")


def test_fip_suppressor_runs_in_the_models_batchnorm_mode_unless_told_otherwise():
    from backdoorlab.curvature.fisher import fisher_trace_estimate

    model = small_model().train()
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2)

    def estimate(fn):
        torch.manual_seed(3)
        return fn().item()

    in_train = estimate(lambda: fisher_trace_estimate(model, x, y))
    assert estimate(lambda: FIP().suppressor(model, x, y)) == pytest.approx(in_train, rel=1e-6)
    in_eval = estimate(lambda: FIP(suppressor_bn_eval=True).suppressor(model, x, y))
    assert model.training and abs(in_eval - in_train) > 1e-3 * abs(in_train)


def test_fip_suppressor_probes_over_samples_when_told():
    from backdoorlab.curvature.fisher import fisher_trace_sign_estimate

    model = small_model().train()
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2)

    def estimate(fn):
        torch.manual_seed(3)
        return fn().item()

    by_signs = estimate(lambda: fisher_trace_sign_estimate(model, x, y, probes=2))
    assert estimate(lambda: FIP(probe_space="samples", probes=2).suppressor(model, x, y)) == pytest.approx(by_signs, rel=1e-6)
    assert estimate(lambda: FIP().suppressor(model, x, y)) != pytest.approx(by_signs, rel=1e-3)  # the default probes weights
    with pytest.raises(ConfigError, match="defense.probe_space must be one of parameters, samples"):
        FIP(probe_space="classes")


def test_suppressor_cap_bounds_its_share_and_successive_gradients_are_compared():
    model = small_model().eval()
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(fip, seed=5):
        torch.manual_seed(seed)
        loss, terms = fip.loss(model, x, y)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]), terms

    ablation = FIP(eta_f=0.0, eta_r=1.0)
    ablation.prepare(model, pool())
    rest, _ = gradient(ablation)
    free = FIP(eta_f=10.0, eta_r=1.0)
    free.prepare(model, pool())
    full, terms = gradient(free)
    assert terms["suppressor_ratio"].item() > 2.0  # a large eta_f: the suppressor dominates the step
    assert (full - rest).norm().item() == pytest.approx(terms["suppressor_ratio"].item() * rest.norm().item(), rel=1e-4)
    capped = FIP(eta_f=10.0, eta_r=1.0, suppressor_max_ratio=0.5)
    capped.prepare(model, pool())
    combined, terms = gradient(capped)
    assert terms["suppressor_ratio"].item() == pytest.approx(0.5, rel=1e-5)
    assert (combined - rest).norm().item() == pytest.approx(0.5 * rest.norm().item(), rel=1e-4)
    cosine = torch.nn.functional.cosine_similarity(combined - rest, full - rest, dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-4)  # the same direction, only its weight is capped
    small = FIP(eta_f=1e-6, eta_r=1.0, suppressor_max_ratio=0.5)  # below the cap, eta_f sets the weight
    small.prepare(model, pool())
    _, terms = gradient(small)
    assert terms["suppressor_weight"].item() == pytest.approx(1e-6) and terms["suppressor_ratio"].item() < 0.5
    assert "suppressor_cosine" not in terms
    _, again = gradient(small, seed=5)  # the same probe again: the same suppressor gradient
    _, other = gradient(small, seed=6)  # another probe
    assert again["suppressor_cosine"].item() == pytest.approx(1.0, abs=1e-5) and other["suppressor_cosine"].item() < 0.999
    with pytest.raises(ConfigError, match="defense.suppressor_max_ratio must be >= 0 or null"):
        FIP(suppressor_max_ratio=-1)


def test_fip_without_suppressor_is_the_retainer_ablation():
    model = small_model()
    fip = FIP(eta_f=0.0, eta_r=0.5)
    fip.prepare(model, pool())
    _, terms = fip.loss(model, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert "fisher_trace" not in terms and set(terms) == {"ce", "retainer"}


def test_suppressor_every_k_steps_on_a_sub_batch():
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2)
    model = small_model().eval()
    sparse = FIP(eta_f=0.1, eta_r=0.5, suppressor_every=3)
    sparse.prepare(model, pool())
    losses = [sparse.loss(model, x, y) for _ in range(7)]
    assert [i for i, (_, terms) in enumerate(losses) if "fisher_trace" in terms] == [0, 3, 6]
    total, terms = losses[3]  # weighted k x eta_f on the steps that carry it
    assert total.item() == pytest.approx((terms["ce"] + 0.5 * terms["retainer"] + 3 * 0.1 * terms["fisher_trace"]).item(), rel=1e-6)
    total, terms = losses[4]
    assert total.item() == pytest.approx((terms["ce"] + 0.5 * terms["retainer"]).item(), rel=1e-6)
    # on a sub-batch the estimate is that of the first n samples, with the same probe
    sub = FIP(eta_f=0.1, eta_r=0.5, suppressor_batch=3)
    sub.prepare(model, pool())
    torch.manual_seed(7)
    on_sub = sub.suppressor(model, x, y)
    torch.manual_seed(7)
    expected = FIP(eta_f=0.1).suppressor(model, x[:3], y[:3])
    assert on_sub.item() == pytest.approx(expected.item(), rel=1e-6)
    _, terms = sub.loss(model, x, y)  # CE still sees the whole batch
    assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)
    with pytest.raises(ConfigError, match="defense.suppressor_every must be >= 1"):
        FIP(suppressor_every=0)
    with pytest.raises(ConfigError, match="defense.suppressor_batch >= 1 or null"):
        FIP(suppressor_batch=0)


def test_fip_rejects_bad_settings():
    with pytest.raises(ConfigError, match="defense.retainer must be one of fisher, kl"):
        FIP(retainer="l2")
    with pytest.raises(ConfigError, match="defense.eta_f and defense.eta_r must be >= 0"):
        FIP(eta_f=-1)


def test_divergence_stops_with_a_clear_error_and_keeps_finite_weights(make_config, tmp_path):
    from backdoorlab.errors import DivergenceError
    from backdoorlab.purification_run import purify
    from backdoorlab.training_run import train_backdoor

    trained = tmp_path / "trained"
    train_backdoor(make_config("train", []), trained)
    cfg = make_config("purify", [f"checkpoint={trained}", "defense=ft", "defense.lr=1e30", "defense.grad_clip=null",
                                 "defense.steps=20"])
    with pytest.raises(DivergenceError, match="ft produced a non-finite (loss|gradient|weight) at step"):
        purify(cfg, tmp_path / "p")
    from safetensors.torch import load_file
    kept = load_file(str(tmp_path / "p" / "model.last_good.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in kept.values())


def test_fine_tuning_loss_is_cross_entropy():
    model = small_model().eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, terms = FineTuning().loss(model, x, y)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(model(x), y)) and set(terms) == {"ce"}
    assert math.isfinite(loss.item()) and BatchAugment(1, True)(x).shape == x.shape


def test_relative_suppressor_gradient_is_eta_f_times_the_rest():
    model = small_model().eval()
    x, y = torch.rand(8, 3, 8, 8), torch.tensor([0, 1, 2, 3] * 2)
    params = [p for p in model.parameters() if p.requires_grad]

    def fip_gradient(**kw):
        fip = FIP(eta_r=1.0, **kw)
        fip.prepare(model, pool())
        torch.manual_seed(5)  # the same Rademacher probe for every call
        loss, terms = fip.loss(model, x, y)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]), loss, terms

    rest, _, _ = fip_gradient(eta_f=0.0)
    with_suppressor, loss, terms = fip_gradient(eta_f=0.3, suppressor_scale="relative")
    suppressor_part = with_suppressor - rest
    assert suppressor_part.norm().item() == pytest.approx(0.3 * rest.norm().item(), rel=1e-4)
    trace, _, _ = fip_gradient(eta_f=1.0)  # absolute: rest + gradient of the trace estimate
    cosine = torch.nn.functional.cosine_similarity(suppressor_part, trace - rest, dim=0)
    assert cosine.item() == pytest.approx(1.0, abs=1e-4)
    expected = terms["ce"] + terms["retainer"] + terms["suppressor_weight"] * terms["fisher_trace"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="defense.suppressor_scale must be one of absolute, relative"):
        FIP(suppressor_scale="log")


def _pool_module(items, batch_size, steps):
    """The part of the data module the purification module uses: the pool and its cycled loader."""
    import lightning as L

    from backdoorlab.data.loaders import Repeated

    class PoolOnly(L.LightningDataModule):
        pool = items

        def train_dataloader(self):
            return torch.utils.data.DataLoader(Repeated(items, steps * batch_size), batch_size=batch_size)

    return PoolOnly()


def test_tail_averaging_returns_the_mean_of_the_last_weights_with_batchnorm_re_estimated_on_the_pool():
    import lightning as L

    from backdoorlab.lightning.purification_module import PurificationModule

    steps, batch = 6, 8
    defense = FineTuning(steps=steps, batch_size=batch, lr=0.5, momentum=0.0, average_fraction=0.5)
    assert defense.averaged_steps() == 3 and Defense(steps=10, average_fraction=1).averaged_steps() == 10
    items, model, seen = pool(16), small_model(), []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append([p.detach().clone() for p in defense.trainable(module.model)])

    module = PurificationModule(model, defense, augment=BatchAugment())
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, callbacks=[Record()],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=_pool_module(items, batch, steps))
    assert module.averaged == 3 and len(seen) == steps
    assert not torch.allclose(seen[-1][0], seen[-3][0])  # the weights did move over the averaged steps
    for p, *last in zip(defense.trainable(model), *seen[-3:]):
        assert torch.allclose(p, torch.stack(last).mean(0), atol=1e-6)
    with torch.no_grad():  # the first BatchNorm normalises conv1's output: its statistics over the whole pool
        x = torch.stack([xi for xi, _ in items])
        inputs = model.net.conv1((x - model.mean) / model.std)
    assert torch.allclose(model.net.layer1[0].bn1.running_mean, inputs.mean((0, 2, 3)), atol=1e-5)


def test_average_fraction_outside_the_unit_interval_stops_before_training():
    with pytest.raises(ConfigError, match="defense.average_fraction must lie in \\[0, 1\\]"):
        FineTuning(average_fraction=1.5)
