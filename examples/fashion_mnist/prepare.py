"""Build the Fashion-MNIST tables of the paper-protocol example ("30% data -> 100% data").

The old model is a small CNN trained here on a seeded 30% of the training
split; its embeddings of every image are the "stored old vectors". The new
model (trained by ``dmu-migrate train --model cnn``) sees 100% of the
training split. Pixels are flattened and scaled to [0, 1] in column ``x``.

Tables written to ``<out>``:
    train.parquet  label, old, x          (the training split, or a seeded subset of it)
    val.parquet    label, old, x, role    (held out of the training split, for tuning)
    eval.parquet   label, old, x, role    (the test split; every 5th image is a query)

Usage: python examples/fashion_mnist/prepare.py --out data/fashion_mnist
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

# Debian's dataset-fashion-mnist; FASHION_MNIST_DIR points elsewhere.
DATA = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
OLD_DIM = 64


def read_idx(path: Path) -> np.ndarray:
    """An idx.gz file (the MNIST format) as a numpy array."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels as (n, 784) float32 in [0, 1], labels as int64) of 'train' or 't10k'."""
    images = DATA / f"{split}-images-idx3-ubyte.gz"
    if not images.exists():
        raise SystemExit(
            f"{images} not found; install the data: apt-get install -y dataset-fashion-mnist"
        )
    x = read_idx(images).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = read_idx(DATA / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return x, y


class OldCNN(nn.Module):
    """The deployed legacy model: a deliberately small CNN (one conv block)."""

    def __init__(self, dim: int = OLD_DIM) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1, 28, 28))


def train_old(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> OldCNN:
    """Normalised-softmax (cosine classifier) training, like the new models get."""
    torch.manual_seed(seed)
    model = OldCNN()
    weight = nn.Parameter(torch.randn(10, OLD_DIM) * 0.01)
    opt = torch.optim.Adam([*model.parameters(), weight], lr=2e-3)
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(ys), generator=gen).split(256):
            logits = 30.0 * F.normalize(model(xs[idx]), dim=1) @ F.normalize(weight, dim=1).T
            loss = F.cross_entropy(logits, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def embed(model: OldCNN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        parts = [F.normalize(model(b), dim=1) for b in torch.as_tensor(x).split(2048)]
    return torch.cat(parts).numpy()


def write(path: Path, columns: dict[str, object]) -> None:
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(values.astype(np.float32).ravel())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            arrays[name] = pa.array(values)
    pq.write_table(pa.table(arrays), path)


def roles(n: int) -> list[str]:
    return ["query" if i % 5 == 0 else "gallery" for i in range(n)]


def prepare(
    out: Path,
    train_size: int = 60000,
    val_size: int = 5000,
    old_share: float = 0.3,
    old_epochs: int = 3,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the tables; ``train_size`` caps the training split (100% = what the new model sees)."""
    out.mkdir(parents=True, exist_ok=True)
    x_all, y_all = load_split("train")
    order = np.random.default_rng(seed).permutation(len(y_all))
    val_idx, train_idx = order[:val_size], order[val_size : val_size + train_size]
    x_tr, y_tr = x_all[train_idx], y_all[train_idx]
    n_old = round(old_share * len(y_tr))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    old_model = train_old(x_tr[:n_old], y_tr[:n_old], old_epochs, seed)
    print(
        f"old CNN: {n_old} images ({old_share:.0%} of {len(y_tr)}), {time.perf_counter() - start:.0f}s"
    )
    x_te, y_te = load_split("t10k")
    splits = {
        "train": (x_tr, y_tr, None),
        "val": (x_all[val_idx], y_all[val_idx], roles(val_size)),
        "eval": (x_te, y_te, roles(len(y_te))),
    }
    paths = {}
    for name, (x, y, role) in splits.items():
        if len(y) == 0:
            continue
        columns: dict[str, object] = {"label": y, "old": embed(old_model, x), "x": x}
        if role is not None:
            columns["role"] = role
        paths[name] = out / f"{name}.parquet"
        write(paths[name], columns)
        print(f"{paths[name]}: {len(y)} images")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/fashion_mnist"))
    parser.add_argument(
        "--train-size",
        type=int,
        default=60000 - 5000,
        help="Training images (100%% of what the new model sees).",
    )
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--old-share", type=float, default=0.3)
    parser.add_argument("--old-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prepare(args.out, args.train_size, args.val_size, args.old_share, args.old_epochs, args.seed)


if __name__ == "__main__":
    main()
