"""End to end: a whole `ticketx find` (resnet20) against the same search as a plain PyTorch loop.

Both sides run at equal hyperparameters on the same data (a class-balanced subset of the real
CIFAR-10 JPEG archive at ../shared/data/cifar10-jpg.tar.gz next to this checkout, or
$TICKETX_CIFAR10_JPG; synthetic images, said loudly, when neither exists), for several seeds,
alternating which side goes first.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.harness import finite, machine
from benchmarks.setups import ArrayImages, torchvision_transform, train_spec
from ticketx.data import load_data
from ticketx.search import find
from ticketx.models import build_model, prunable_names
from ticketx.settings import SearchSpec, PruneSpec
from ticketx.runtime import resolve_device

CIFAR10_JPG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def cifar10_archive() -> Path | None:
    """The real CIFAR-10 JPEG archive: $TICKETX_CIFAR10_JPG, else ../shared/data/ next to this checkout."""
    env = os.environ.get("TICKETX_CIFAR10_JPG")
    path = Path(env) if env else CIFAR10_JPG
    return path if path.is_file() else None


def cifar10_subset(archive: Path, dest: Path, train_per_class: int, test_per_class: int) -> Path:
    """Extract a class-balanced subset of the JPEG archive into dest (once; reused afterwards)."""
    import tarfile
    from collections import Counter

    done = dest / ".complete"
    if done.exists():
        return dest
    quota = {"train": train_per_class, "test": test_per_class}
    taken: Counter = Counter()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:  # one streaming pass over the gzip, stopping at each class's quota
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] in quota and taken[parts[0], parts[1]] < quota[parts[0]]:
                taken[parts[0], parts[1]] += 1
                try:
                    tar.extract(member, dest, filter="data")
                except TypeError:  # Python without tarfile extraction filters
                    tar.extract(member, dest)
    done.write_text("ok")
    return dest


def synthetic_folder_data(n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Learnable synthetic CIFAR-sized data: each class a colour and a stripe pattern, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        colour = torch.rand(10, 3, 1, 1, generator=g)[y] * 160
        rows = torch.arange(32).view(1, 1, 32, 1)
        stripes = ((rows // (1 + y.view(-1, 1, 1, 1) % 5)) % 2) * 60
        noise = torch.rand(n, 3, 32, 32, generator=g) * 90
        return (colour + stripes + noise).clamp(0, 255).to(torch.uint8), y

    return (*make(n_train), *make(n_test))


@dataclass
class E2EConfig:
    train_per_class: int = 200
    # 5000 test images: the binomial noise of one accuracy is then ~0.7 points (1.5 at 1000).
    test_per_class: int = 500
    epochs: int = 4
    rounds: int = 2
    batch_size: int = 128
    seed: int = 0  # the seed of one run (plain_imp); e2e() runs every seed of `seeds`
    workers: int = 0
    # Seed to seed, a 4-epoch resnet20 on 2000 images varies by ~2-3 accuracy points (measured:
    # 28.4-37.0% over 6 seeds of the plain loop), so the comparison needs several seeds.
    seeds: tuple[int, ...] = (0, 1, 2)
    # Also a `ticketx find --compile on` per seed (a third side). Its on-disk compile cache starts
    # empty: the first seed's compile is cold, later seeds' are cached.
    compiled: bool = False


def same_within_noise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Is ticketx's accuracy the plain loop's, within seed noise?

    Seeds are the independent unit (a seed's rounds share their rewind weights), so each seed's
    search is summarised by its accuracy averaged over the rounds, and the two sides' means are
    compared against twice the standard error of their difference (Welch: each side's own
    seed-to-seed spread).
    """
    n = len(rounds[0]["ticketx_acc"])
    per_seed = {k: [statistics.mean(r[k][i] for r in rounds) for i in range(n)] for k in ("ticketx_acc", "plain_acc")}
    diff = statistics.mean(per_seed["ticketx_acc"]) - statistics.mean(per_seed["plain_acc"])
    if n < 2:
        return {"seeds": n, "mean_difference": diff, "noise": None, "same": None,
                "note": "one seed: no estimate of seed noise (run more seeds)"}
    se = math.sqrt(sum(statistics.variance(v) / n for v in per_seed.values()))
    same = abs(diff) <= 2 * se
    return {"seeds": n, "mean_difference": diff, "seed_sd": {k[:-4]: statistics.stdev(v) for k, v in per_seed.items()},
            "noise": 2 * se, "same": same,
            "note": f"mean over rounds: {100 * diff:+.2f} points, {'within' if same else 'beyond'} 2 standard errors "
                    f"({100 * 2 * se:.2f} points) of {n} seeds per side"}


def e2e(cfg: E2EConfig, device: str = "auto", log: Callable[[str], None] | None = None,
        cache: Path | None = None) -> dict[str, Any]:
    """Resnet20 ticket searches by `ticketx.search.find` and by a plain PyTorch loop, same hyperparameters, per seed.

    The data subset is extracted once into `cache` (default: the user cache folder + /bench).
    """
    import platformdirs

    log = log or (lambda msg: None)
    dev = resolve_device(device)
    cache = cache or Path(platformdirs.user_cache_dir("ticketx")) / "bench"
    archive = cifar10_archive()
    if archive is not None:
        folder = cifar10_subset(archive, cache / f"cifar10-jpg-{cfg.train_per_class}-{cfg.test_per_class}",
                                cfg.train_per_class, cfg.test_per_class)
        source = f"real CIFAR-10 ({archive}), {cfg.train_per_class}/class train, {cfg.test_per_class}/class test"
    else:
        folder = cache / f"synthetic-{cfg.train_per_class}-{cfg.test_per_class}"
        _write_synthetic_folder(folder, cfg)
        source = ("SYNTHETIC data (the CIFAR-10 archive ../shared/data/cifar10-jpg.tar.gz was not found): "
                  f"{cfg.train_per_class}/class train, {cfg.test_per_class}/class test")
    log(f"[dim]e2e data: {source}[/]")
    data_text = f"imagefolder:{folder}"
    data = load_data(data_text, cache / "data", image_size=32)  # decoded once (cached) before any timing

    epochs = cfg.epochs
    milestone = f"{max(1, round(epochs * 0.75))}ep"  # one lr drop at 3/4 of training, as 120/160 in open_lth
    tspec = train_spec("resnet20", batch_size=cfg.batch_size, length=f"{epochs}ep", milestones=[milestone],
                        eval_every=f"{epochs}ep")
    pspec = PruneSpec(rounds=cfg.rounds, rate=0.2, scope="global", rewind="1ep")

    if cfg.compiled:  # an empty on-disk compile cache, so the first seed's compile is a cold one
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ticketx-e2e-inductor-")
    per_seed = []
    for i, seed in enumerate(cfg.seeds):
        spec = SearchSpec(data=data_text, model="resnet20", image_size=32, train=tspec, prune=pspec, seed=seed)

        def run_ticketx() -> tuple[float, list[dict[str, Any]]]:
            with tempfile.TemporaryDirectory(prefix="ticketx-e2e-") as tmp:
                t0 = time.perf_counter()
                ticket = find(spec, Path(tmp) / "ticket.pt", data_dir=cache / "data", device=str(dev))
                return time.perf_counter() - t0, ticket.rounds

        def run_compiled() -> tuple[float, list[dict[str, Any]]]:
            torch._dynamo.reset()  # as in a new `ticketx find` process; the on-disk cache stays
            before = os.environ.get("TICKETX_COMPILE")
            os.environ["TICKETX_COMPILE"] = "on"
            try:
                return run_ticketx()
            finally:
                if before is None:
                    os.environ.pop("TICKETX_COMPILE", None)
                else:
                    os.environ["TICKETX_COMPILE"] = before

        def run_plain() -> tuple[float, dict[str, list[float]]]:
            t0 = time.perf_counter()
            out = plain_imp(data, dataclasses.replace(cfg, seed=seed), dev, lr=tspec.lr, momentum=tspec.momentum,
                            weight_decay=tspec.weight_decay, milestone_epoch=int(milestone[:-2]))
            return time.perf_counter() - t0, out

        # Rotate which side goes first, so a change in background load falls on every side.
        sides = ["ticketx", "plain"] + (["compiled"] if cfg.compiled else [])
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        names = {"ticketx": "ticketx find", "plain": "plain PyTorch loop", "compiled": "ticketx find --compile on"}
        fns = {"ticketx": run_ticketx, "plain": run_plain, "compiled": run_compiled}
        done: dict[str, Any] = {}
        for side in order:
            log(f"[dim]e2e seed {seed}: {names[side]} ...[/]")
            done[side] = fns[side]()
            log(f"[dim]e2e seed {seed}: {side} done in {done[side][0]:.0f}s[/]")
        per_seed.append(done)

    rounds = []
    for r in range(cfg.rounds + 1):
        tx = [d["ticketx"][1][r]["test_acc"] for d in per_seed]
        pl = [d["plain"][1]["acc"][r] for d in per_seed]
        rounds.append({"round": r, "density": per_seed[0]["ticketx"][1][r]["density"],
                       "plain_density": per_seed[0]["plain"][1]["density"][r], "ticketx_acc": tx, "plain_acc": pl,
                       "ticketx_mean": statistics.mean(tx), "plain_mean": statistics.mean(pl)})
    t_tx = [d["ticketx"][0] for d in per_seed]
    t_pl = [d["plain"][0] for d in per_seed]
    out = {
        "data": source, "device": str(dev), "machine": machine(dev), "config": asdict(cfg),
        "train": tspec.model_dump(), "prune": pspec.model_dump(),
        "ticketx_seconds": t_tx, "plain_seconds": t_pl, "speedup": sum(t_pl) / sum(t_tx),
        "rounds": rounds, "accuracy": same_within_noise(rounds),
    }
    if cfg.compiled:
        t_c = [d["compiled"][0] for d in per_seed]
        compiled_rounds = [{"ticketx_acc": [d["compiled"][1][r]["test_acc"] for d in per_seed],
                            "plain_acc": rounds[r]["plain_acc"]} for r in range(cfg.rounds + 1)]
        out.update(compiled_seconds=t_c, compiled_speedup=sum(t_pl) / sum(t_c),
                   compiled_vs_eager=sum(t_tx) / sum(t_c), compiled_accuracy=same_within_noise(compiled_rounds),
                   compiled_acc=[r["ticketx_acc"] for r in compiled_rounds])
    return finite(out)


def _write_synthetic_folder(folder: Path, cfg: E2EConfig) -> None:
    from PIL import Image

    if (folder / ".complete").exists():
        return
    n_train, n_test = 10 * cfg.train_per_class, 10 * cfg.test_per_class
    xtr, ytr, xte, yte = synthetic_folder_data(n_train, n_test)
    for split, xs, ys in (("train", xtr, ytr), ("test", xte, yte)):
        for i, (x, y) in enumerate(zip(xs, ys)):
            d = folder / split / f"class{int(y)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    (folder / ".complete").write_text("ok")


def plain_imp(data: Any, cfg: E2EConfig, device: torch.device, *, lr: float, momentum: float, weight_decay: float,
              milestone_epoch: int) -> dict[str, list[float]]:
    """The baseline: IMP with rewinding to epoch 1 as a user writes it without ticketx.

    torchvision DataLoader + PIL transforms, a per-epoch lr schedule,
    torch.nn.utils.prune.global_unstructured (20% of the remaining weights per round, over every
    conv and linear weight), loss.item() every step. It is the comparison, not a copy of
    ticketx's search: nothing here is shared with `ticketx.search` except the model definition.
    """
    from torch.nn.utils import prune

    torch.manual_seed(cfg.seed)
    train_ds = ArrayImages(data.train_x, data.train_y, torchvision_transform(data.mean, data.std, train=True))
    test_ds = ArrayImages(data.test_x, data.test_y, torchvision_transform(data.mean, data.std, train=False))
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                               num_workers=cfg.workers, pin_memory=device.type == "cuda",
                                               persistent_workers=cfg.workers > 0)
    test_loader = torch.utils.data.DataLoader(test_ds, batch_size=256, num_workers=cfg.workers)
    model = build_model("resnet20", data.num_classes, 3, 32).to(device)
    modules = dict(model.named_modules())
    targets = [(modules[n.rpartition(".")[0]], "weight") for n in prunable_names(model)]

    def run_epochs(first: int, snapshot: bool) -> dict[str, torch.Tensor] | None:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        rewind = None
        for epoch in range(first, cfg.epochs):
            for g in opt.param_groups:
                g["lr"] = lr * (0.1 if epoch >= milestone_epoch else 1.0)
            model.train()
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss.item()
            if snapshot and epoch == 0:
                rewind = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return rewind

    def accuracy() -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
                total += len(y)
        return correct / total

    def density() -> float:
        kept = sum(int(m.weight_mask.sum()) if hasattr(m, "weight_mask") else m.weight.numel() for m, _ in targets)
        return kept / sum(m.weight.numel() for m, _ in targets)

    rewind = run_epochs(0, snapshot=True)
    assert rewind is not None
    accs, dens = [accuracy()], [1.0]
    for _ in range(cfg.rounds):
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.2)
        with torch.no_grad():  # rewind every weight (pruned ones are now 'X.weight_orig') and BN state to epoch 1
            state = model.state_dict()
            for k, v in rewind.items():
                state[k if k in state else k + "_orig"].copy_(v)
        run_epochs(1, snapshot=False)
        accs.append(accuracy())
        dens.append(density())
    return {"acc": accs, "density": dens}


def render_e2e(res: dict[str, Any]) -> Any:
    from rich.table import Table

    cfg = res["config"]
    title = (f"end to end: resnet20 ticket search, {cfg['rounds']} rounds x {cfg['epochs']} epochs, seeds "
             f"{','.join(map(str, cfg['seeds']))}, on {res['device']}; data: {res['data']}")
    table = Table(title=title, title_justify="left")
    for col in ("round", "% weights remaining", "ticketx acc % (mean)", "plain acc % (mean)", "difference",
                "ticketx per seed", "plain per seed"):
        table.add_column(col, justify="right")
    for r in res["rounds"]:
        table.add_row(str(r["round"]), f"{100 * r['density']:.2f}", f"{100 * r['ticketx_mean']:.2f}",
                      f"{100 * r['plain_mean']:.2f}", f"{100 * (r['ticketx_mean'] - r['plain_mean']):+.2f}",
                      " ".join(f"{100 * a:.1f}" for a in r["ticketx_acc"]), " ".join(f"{100 * a:.1f}" for a in r["plain_acc"]))
    acc = res["accuracy"]
    verdict = {True: "[green]same accuracy within seed noise[/]", False: "[red]accuracy differs beyond seed noise[/]",
               None: "[yellow]seed noise not estimated[/]"}[acc["same"]]
    table.caption = (f"time: ticketx find {sum(res['ticketx_seconds']):.0f}s, plain PyTorch loop + DataLoader "
                     f"(num_workers={cfg['workers']}) {sum(res['plain_seconds']):.0f}s: ticketx "
                     f"[bold]{res['speedup']:.2f}x[/] as fast; {verdict} ({acc['note']})")
    if res.get("compiled_seconds"):
        table.caption += (f"; ticketx find --compile on {sum(res['compiled_seconds']):.0f}s "
                          f"({' '.join(f'{t:.0f}' for t in res['compiled_seconds'])} per seed, the first compiling cold): "
                          f"[bold]{res['compiled_speedup']:.2f}x[/] the plain loop, {res['compiled_vs_eager']:.2f}x "
                          f"ticketx without it; its accuracy vs the plain loop: {res['compiled_accuracy']['note']}")
    table.caption_justify = "left"
    return table
