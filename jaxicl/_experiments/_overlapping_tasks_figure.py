"""The overlapping-tasks figure: split-up against H, purity of the heads, losses."""

import numpy as np

from .._host._figures import _pyplot


def plot_overlapping_tasks(results, summary, path) -> None:
    plt = _pyplot()
    fig, (ax_split, ax_purity, ax_loss) = plt.subplots(1, 3, figsize=(16, 4.5))
    heads = list(results)
    groups = [summary["groups"][str(h)] for h in heads]
    # a head count whose members all diverged has no numbers: a gap in the curves
    number = lambda g, name: g.get(name, np.nan)  # noqa: E731
    ax_split.errorbar(
        heads,
        [number(g, "split_rate") for g in groups],
        yerr=[number(g, "split_stderr") for g in groups],
        fmt="o-",
        capsize=3,
        label="every task has its own ± pair",
    )
    ax_split.plot(
        heads, [number(g, "mixed_head_fraction") for g in groups], "s--", label="mixed live heads"
    )
    ax_split.axvline(4, color="grey", ls=":", label="H = 2N")
    ax_split.set(xlabel="heads H", ylabel="fraction", ylim=(-0.02, 1.05))
    ax_split.set_title("Superposition (H < 2N) vs split-up (H ≥ 2N)")
    ax_split.legend(fontsize=8)
    rng = np.random.default_rng(0)
    healthy = {h: ~rec["diverged"][:, -1] for h, rec in results.items()}
    for h, rec in results.items():
        purity = rec["purity"][healthy[h]][rec["live"][healthy[h]]]
        ax_purity.scatter(h + rng.uniform(-0.25, 0.25, purity.size), purity, s=4, alpha=0.4)
    ax_purity.axhline(0.9, color="grey", ls=":", label="purity threshold")
    ax_purity.set(xlabel="heads H", ylabel="purity of each live head", ylim=(0.45, 1.02))
    ax_purity.set_title("Head purity: 1 serves one task, 0.5 both equally")
    ax_purity.legend(fontsize=8)
    ax_loss.boxplot([rec["final_loss"][healthy[h]] for h, rec in results.items()], showfliers=False)
    ax_loss.set_xticks(np.arange(1, len(heads) + 1), [str(h) for h in heads])
    ax_loss.set(xlabel="heads H", ylabel="population loss after training")
    ax_loss.set_title("Final loss over members (diverged ones left out)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
