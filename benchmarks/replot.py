"""Redraw the committed plots of benchmark results folders from their CSV files, training nothing.

Each folder's ``pareto.png`` and ``nfe_training.png`` are drawn again from its ``summary.csv`` and
``curves.csv`` with :mod:`_plots` (the same functions the benchmark scripts call after a run), so a
change of the plots' style reaches the committed figures without retraining.

    python benchmarks/replot.py                           # every folder of benchmarks/results/
    python benchmarks/replot.py benchmarks/results/mnist_node
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _plots  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Folders whose plots another script draws in its own layout (weight_control.py --summarize).
OWN_LAYOUT = ("weight_control",)


def default_folders():
    """Every committed results folder with a summary, but those drawn by their own script."""
    return sorted(p for p in RESULTS.iterdir() if (p / "summary.csv").is_file()
                  and not p.name.startswith(OWN_LAYOUT) and not p.name.endswith("_smoke"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        help=f"results folders (default: every folder of {RESULTS} with a summary.csv, except "
                             f"{', '.join(OWN_LAYOUT)}, whose script redraws them with --summarize)")
    args = parser.parse_args(argv)
    folders = args.folders or default_folders()
    written = []
    for folder in folders:
        if not (folder / "summary.csv").is_file():
            parser.error(f"{folder} has no summary.csv")
        for path in _plots.replot(folder):
            print(f"wrote {path}")
            written.append(path)
    return written


if __name__ == "__main__":
    main()
