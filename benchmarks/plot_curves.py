"""Validation curves of training runs in one picture (each run's metrics.jsonl).

    python benchmarks/plot_curves.py runs/a runs/b ... [--labels A B ...] [--metric abs_rel] --out curves.png

Runs with the same label share a colour (several seeds of one recipe); the y axis is
logarithmic, so that a jump by an order of magnitude stands out.
"""
import argparse
import json
import os


def read_curve(run, metric):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"{run}: no metrics.jsonl (a run that validated at least once)")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r["epoch"] for r in records], [r[metric] for r in records]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (<log_dir>/<model_name>)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    p.add_argument("--metric", default="abs_rel")
    p.add_argument("--title", default="validation curves")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, label in zip(args.runs, labels):
        epochs, values = read_curve(run, args.metric)
        first = label not in colours
        colours.setdefault(label, f"C{len(colours) % 10}")
        ax.plot(epochs, values, "o-", color=colours[label], alpha=0.8, label=label if first else None)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {args.metric}")
    ax.set_title(args.title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
