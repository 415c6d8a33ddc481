"""Write the stratified CIFAR-10 sample that ships in `common/sample/cifar10/` (Hub parquet layout).

Usage: python scripts/make_cifar10_sample.py --source CIFAR10_DIR [--train-per-class 200]
CIFAR10_DIR is a CIFAR-10 folder in the Hub's parquet layout ({train,test}-00000-of-00001.parquet).
The images keep their original encoded bytes, so the sample decodes exactly like the full set.
"""
import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "common" / "sample" / "cifar10"


def stratified_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """The first `per_class` rows of each class after a seeded shuffle, in shuffled order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    keep = np.concatenate([order[labels[order] == c][:per_class] for c in np.unique(labels)])
    return np.sort(keep)


def main() -> None:
    """Parse the arguments and write the sample."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, metavar="CIFAR10_DIR",
                        help="a CIFAR-10 folder in the Hub's parquet layout")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    missing = [f"{split}-00000-of-00001.parquet" for split in ("train", "test")
               if not (Path(args.source) / f"{split}-00000-of-00001.parquet").is_file()]
    if missing:
        parser.error(f"--source {args.source} lacks {', '.join(missing)}: give a CIFAR-10 folder in the Hub's "
                     f"parquet layout.")
    OUT.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        table = pq.read_table(Path(args.source) / f"{split}-00000-of-00001.parquet")
        rows = stratified_rows(table.column("label").to_numpy(), per_class, seed=0)
        pq.write_table(table.take(rows), OUT / f"{split}-00000-of-00001.parquet")
        print(f"{split}: {len(rows)} images -> {OUT}")


if __name__ == "__main__":
    main()
