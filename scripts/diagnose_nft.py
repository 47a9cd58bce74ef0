"""Why NFT does or does not purify a model: where the trigger lives among the BatchNorm channels,
whether masks inside NFT's clip bounds can reach it, how hard the clean pool pushes on those masks,
and (given an NFT run) where the masks ended.

    python scripts/diagnose_nft.py checkpoint=outputs/demo/train experiment=demo
    python scripts/diagnose_nft.py checkpoint=<model run> experiment=cifar_cpu --nft-run <purified run> [--nft-run ...]

Overrides are the purify entry point's (``defense.*`` settings of ``defense=nft`` included). Prints:

1. per masked layer (l in forward order): channels, NFT's lower clip bound, the largest trigger score
   (how far the trigger moves a channel's mean output, in clean standard deviations) and how many
   of the top-scoring channels it holds;
2. ACC / ASR with the top-scoring channels' masks at their layer's lower bound (the most NFT can do
   to them) and at 0 (unconstrained pruning; an oracle, since it uses the trigger);
3. the mean |gradient| of NFT's MixUp loss on the pool with respect to the masks of the top channels
   and of the others, beside the regulariser's gradient per mask (c / N_c);
4. for each ``--nft-run``: the learned masks (gamma after / gamma before) of the top channels and of
   the others, and the share sitting at the lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from backdoorlab.analysis.channels import accuracy, channel_means, top_channels, trigger_scores  # noqa: E402
from backdoorlab.builders import build_augment, build_defense  # noqa: E402
from backdoorlab.config import compose_run_config  # noqa: E402
from backdoorlab.defenses.nft import mixup_cross_entropy  # noqa: E402
from backdoorlab.models.checkpoint import read_state_dict  # noqa: E402
from backdoorlab.purification_run import load_backdoored  # noqa: E402
from backdoorlab.reporting.table import format_table  # noqa: E402


def stacked(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def paired_images(data, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images (true class not the target) clean and with the trigger."""
    triggered = data.test_triggered
    chosen = torch.randperm(len(triggered), generator=torch.Generator().manual_seed(seed))[:n]
    clean = torch.stack([triggered.base.image(int(triggered.indices[i])) for i in chosen])
    return clean, torch.stack([data.attack.apply(x) for x in clean])


@torch.no_grad()
def set_masks(masks, values) -> None:
    for m, v in zip(masks, values):
        m.copy_(v)


def acc_asr(model, test, triggered) -> tuple[float, float]:
    model.eval()
    return accuracy(model, *test), accuracy(model, *triggered)


def mixup_gradients(model, defense, pool, augment, batches: int, seed: int) -> list[torch.Tensor]:
    """Mean |d MixUp-CE / d mask| over ``batches`` augmented pool batches, model in NFT's mode."""
    torch.manual_seed(seed)
    total = [torch.zeros_like(m) for m in defense.masks]
    x_all, y_all = stacked(pool, range(len(pool)))
    for _ in range(batches):
        pick = torch.randint(0, len(pool), (defense.batch_size,))
        model.train(defense.train_mode)
        lam = float(torch.distributions.Beta(defense.mixup_alpha, defense.mixup_alpha).sample()) if defense.mixup else 1.0
        loss = mixup_cross_entropy(model, augment(x_all[pick]), y_all[pick], lam)
        for t, g in zip(total, torch.autograd.grad(loss, defense.masks)):
            t += g.abs() / batches
    model.eval()
    return total


def learned_masks(run: Path, defense, before: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    after = read_state_dict(run / "model.safetensors")
    names = [name.removeprefix("net.") + ".weight" for name in defense.masked_layers]
    return [after[n] / before[n] for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="purify overrides: checkpoint=..., experiment=...")
    parser.add_argument("--nft-run", type=Path, action="append", default=[], help="a purified defense=nft run of this model")
    parser.add_argument("--top", type=float, nargs="+", default=[0.01, 0.05], help="shares of all channels taken as trigger channels")
    parser.add_argument("--images", type=int, default=500, help="paired clean/triggered test images for the scores")
    parser.add_argument("--batches", type=int, default=20, help="pool batches for the gradient measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = compose_run_config("purify", ["defense=nft", "logger=none", *args.overrides], tempfile.mkdtemp())
    _, data, model = load_backdoored(cfg)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    defense = build_defense(cfg)
    pool = data.pool_subset(defense.samples_per_class, cfg.purification_seed)
    defense.wrap(model, pool)
    model.eval()
    test = stacked(data.test_clean, range(len(data.test_clean)))
    triggered = stacked(data.test_triggered, range(len(data.test_triggered)))
    layers = [model.get_submodule(name) for name in defense.masked_layers]

    clean_x, trig_x = paired_images(data, args.images, args.seed)
    scores = trigger_scores(channel_means(model, layers, clean_x), channel_means(model, layers, trig_x))
    ones = [torch.ones_like(m) for m in defense.masks]
    acc0, asr0 = acc_asr(model, test, triggered)
    threads = torch.get_num_threads()
    print(f"model {cfg.checkpoint}: ACC {acc0:.2f} ASR {asr0:.2f}; {sum(m.numel() for m in defense.masks)} masks in "
          f"{len(layers)} layers; pool {len(pool)} images ({defense.per_class:g} per class); {threads} threads\n")

    widest = max(args.top)
    top = top_channels(scores, widest)
    rows = [[i + 1, name, len(s), f"{low:.3f}", f"{float(s.max()):.2f}", int(t.sum())]
            for i, (name, s, low, t) in enumerate(zip(defense.masked_layers, scores, defense.lower, top))]
    print(format_table(["l", "layer", "channels", "lower bound", "max score", f"in top {widest:.0%}"], rows) + "\n")

    rows = []
    for share in args.top:
        chosen = top_channels(scores, share)
        for label, value in (("lower bound", None), ("0 (oracle)", 0.0)):
            set_masks(defense.masks, [torch.where(c, torch.full_like(m, low if value is None else value), m)
                                      for c, m, low in zip(chosen, ones, defense.lower)])
            rows.append([f"{share:.0%}", label, *(f"{v:.2f}" for v in acc_asr(model, test, triggered))])
    set_masks(defense.masks, ones)
    print(format_table(["top channels", "their masks at", "ACC", "ASR"], rows) + "\n")

    grads = mixup_gradients(model, defense, pool, build_augment(cfg.dataset.augment), args.batches, args.seed)
    flat_g, flat_top = torch.cat(grads), torch.cat(top)
    print(format_table(["masks", "count", "mean |grad MixUp CE|"], [
        [f"top {widest:.0%} channels", int(flat_top.sum()), f"{float(flat_g[flat_top].mean()):.3g}"],
        ["the others", int((~flat_top).sum()), f"{float(flat_g[~flat_top].mean()):.3g}"],
    ]) + f"\nregulariser gradient per mask below 1: c / N_c = {defense.mask_l1 / defense.per_class:.3g} (0 at m = 1)\n")

    for run in args.nft_run:
        learned = learned_masks(run, defense, before)
        flat_m = torch.cat(learned)
        at_low = torch.cat([(m <= low + 1e-4) for m, low in zip(learned, defense.lower)])
        rows = [[label, f"{float(flat_m[sel].mean()):.3f}", f"{float(flat_m[sel].min()):.3f}",
                 f"{100 * float(at_low[sel].float().mean()):.1f}"]
                for label, sel in ((f"top {widest:.0%} channels", flat_top), ("the others", ~flat_top))]
        print(f"{run}:\n" + format_table(["masks", "mean", "min", "% at lower bound"], rows) + "\n")
    print(f"median trigger score {statistics.median(torch.cat(scores).tolist()):.2f}")


if __name__ == "__main__":
    main()
