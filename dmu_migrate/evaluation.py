"""``dmu-migrate evaluate``: what the upgrade buys, on held-out data.

Settings (query model -> gallery vectors):
    old->old       today's system
    new->old       new queries against the untouched old gallery (compatibility)
    new->evolved   new queries against psi(old gallery): what evolve deploys
    new->mixed     new queries against a gallery that is part evolved, part natively
                   new: the store after evolve plus new inserts
    new->new       new queries against a re-embedded gallery (full backfill)
    fused          transition mode: [a q_old ; b q_new] against [o ; psi(o)], with the
                   weights fitted at training (artifacts trained with held-out identities)
Settings whose gallery is built from stored old vectors (old->old, new->old,
new->evolved, fused) are scored with distractors beside the gallery: by default the
artifact's training table, as train's gate was (distractors.py). Beside new->evolved,
the adapter's ceiling: the same form fitted on this gallery's pairs (ceiling.py).
Beside them, the partial-backfill curve (backfill_curve.py): new->mixed as a growing
share of the gallery is re-embedded, in the artifact's ranked order and at random.
new->mixed and the curve score evolved items with the artifact's calibrated offset, as a
cosine collection stores them (calibration.py); the report gives the offset.
Only onnxruntime is used (matplotlib for the optional chart), so evaluation
runs wherever evolve runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dmu_migrate import backfill_curve as backfill
from dmu_migrate import calibration
from dmu_migrate import distractors as crowd
from dmu_migrate.artifact import Artifact
from dmu_migrate.ceiling import Ceiling, form_of, gap_closed, oracle
from dmu_migrate.data import Columns, Table, read_table
from dmu_migrate.distractors import Distractors, Pool
from dmu_migrate.errors import InputError
from dmu_migrate.metrics import (
    Derived,
    RetrievalScores,
    derived_figures,
    l2_normalize,
    retrieval_scores,
    tar_at_far,
)
from dmu_migrate.onnx_model import OnnxModel
from dmu_migrate.quality import Verdict, fused_gallery, judged_at, transition_hint, verdict

SETTINGS = ("old->old", "new->old", "new->evolved", "new->mixed", "new->new")
FUSED = "fused"  # transition mode, when the artifact carries fitted weights
CEILING = "ceiling"  # the oracle adapter (ceiling.py), beside new->evolved
FARS = (1e-3, 1e-4)


@dataclass(frozen=True)
class EvalReport:
    table: str
    artifact: str
    protocol: str  # "query/gallery" or "leave-one-out"
    queries: int
    gallery: int
    scores: dict[str, RetrievalScores]
    mixed_fraction: float = 0.5  # share of gallery items that are natively new in new->mixed
    new_source: str = "new_model.onnx"  # or "column 'new'": where the new embeddings came from
    reference: str | None = None  # full-backfill reference artifact, when given
    reference_scores: RetrievalScores | None = None  # its new->new = M(new*->new*)
    derived: Derived = field(default_factory=lambda: Derived({}, {}, {}))
    backfill: backfill.BackfillReport | None = None  # None when not asked for
    charts: tuple[Path, ...] = ()  # PNG files written (evaluate's plot): bars, then curve
    # The distractors beside the gallery, and how many each setting's figure saw
    distractors: dict[str, Any] = field(default_factory=lambda: crowd.describe(None, []))
    ceiling: Ceiling | None = None  # the oracle adapter fitted on this gallery (ceiling.py)
    # The artifact's offset of evolved items in new->mixed and the backfill curve
    # (calibration.py), with new->mixed scored without it when it is not 0
    calibration: dict[str, Any] = field(default_factory=lambda: {"offset": 0.0})

    def as_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "artifact": self.artifact,
            "protocol": self.protocol,
            "queries": self.queries,
            "gallery": self.gallery,
            "mixed_fraction": self.mixed_fraction,
            "new_embeddings": self.new_source,
            "settings": {name: s.as_dict() for name, s in self.scores.items()},
            "reference": self.reference,
            "reference_new_new": (
                self.reference_scores.as_dict() if self.reference_scores is not None else None
            ),
            "derived": self.derived.as_dict(),
            "distractors": self.distractors,
            "ceiling": self.ceiling.as_dict() if self.ceiling is not None else None,
            "calibration": self.calibration,
            "verdict": self.verdict.line,
            "transition_hint": self.transition_hint,
            "backfill": self.backfill.as_dict() if self.backfill is not None else None,
        }

    @property
    def verdict(self) -> Verdict:
        """Deploy or not: new->evolved against old->old on this table."""
        figures = {k: {"R@1": s.recall[1], "mAP": s.mean_ap} for k, s in self.scores.items()}
        count, source = self.distractors.get("count"), self.distractors.get("source")
        return verdict(figures, judged_at(Path(self.table).name, count, source))

    @property
    def transition_hint(self) -> str | None:
        """When the evolved gallery loses to old->old here but the fused one wins."""
        if self.verdict.deploy is not False or "fused" not in self.scores:
            return None
        figures = {k: {"R@1": s.recall[1]} for k, s in self.scores.items()}
        return transition_hint({"fusion": figures["fused"], "settings": figures}, self.artifact)


def new_embeddings(
    artifact: Artifact, table: Table, columns: Columns, need_x: bool
) -> tuple[np.ndarray, str]:
    """New-model embeddings of every row: the artifact's encoder over ``x``, else the
    table's ``new`` column (an adapter-only artifact ships no encoder)."""
    m = artifact.manifest
    if artifact.new_model_path is not None and need_x:
        if table.x.shape[1] != m.input_dim:
            raise InputError(
                f"column '{columns.x}' of '{table.path}' has {table.x.shape[1]} features but the "
                f"new model of '{m.name}' takes {m.input_dim}; use the table the model was trained for"
            )
        return OnnxModel(artifact.new_model_path)(table.x), "new_model.onnx"
    new, new_name = table.new, columns.new
    if new is None:
        raise InputError(
            f"artifact {artifact.label} has no new_model.onnx and '{table.path}' has no column "
            f"'{new_name}'; add the new model's embeddings as column '{new_name}' (or pass "
            f"--new-col) or use an artifact trained with a new model"
        )
    if new.shape[1] != m.new_dim:
        raise InputError(
            f"column '{new_name}' of '{table.path}' has {new.shape[1]}-d vectors but artifact "
            f"'{m.name}' evolves into {m.new_dim}-d; use the new model's embeddings of this upgrade"
        )
    return new, f"column '{new_name}'"


def embed(
    artifact: Artifact, table: Table, columns: Columns = Columns()
) -> tuple[dict[str, np.ndarray], str]:
    """The embeddings of every row: old (stored), new (encoder or column), evolved (adapter)."""
    m = artifact.manifest
    if table.old.shape[1] != m.old_dim:
        raise InputError(
            f"column '{columns.old}' of '{table.path}' has {table.old.shape[1]}-d vectors but "
            f"adapter '{m.name}' expects {m.old_dim}-d; use the table of the matching old model"
        )
    new, source = new_embeddings(artifact, table, columns, table.x.shape[1] > 0)
    vectors = {"old": table.old, "new": new, "evolved": OnnxModel(artifact.adapter_path)(table.old)}
    return vectors, source


def split_roles(table: Table, columns: Columns) -> tuple[np.ndarray, np.ndarray, bool]:
    """Query and gallery row indices, and whether the protocol is leave-one-out."""
    if table.role is None:
        every = np.arange(len(table))
        return every, every, True
    is_query = table.role == "query"
    if not is_query.any() or is_query.all():
        raise InputError(
            f"column '{columns.role}' of '{table.path}' needs both 'query' and 'gallery' rows"
        )
    return np.flatnonzero(is_query), np.flatnonzero(~is_query), False


def mixed_gallery(
    evolved: np.ndarray, new: np.ndarray, fraction: float, seed: int, offset: float = 0.0
) -> np.ndarray:
    """A seeded ``fraction`` of the rows natively new, the rest evolved; with an
    ``offset``, stored as a cosine collection holds them calibrated (calibration.py)."""
    rng = np.random.default_rng(seed)
    native = rng.permutation(len(new))[: round(fraction * len(new))]
    return calibration.gallery(evolved, new, native, offset)


def score(
    queries: np.ndarray,
    q_labels: np.ndarray,
    gallery: np.ndarray,
    g_labels: np.ndarray,
    leave_one_out: bool,
    fars: Sequence[float],
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> RetrievalScores:
    """``extra``: distractor vectors (of the gallery's kind) and their label codes."""
    d, dl = (None, None) if extra is None else extra
    s = retrieval_scores(
        queries,
        q_labels,
        gallery,
        g_labels,
        leave_one_out=leave_one_out,
        distractors=d,
        distractor_labels=dl,
    )
    if not fars:
        return s
    tar = tar_at_far(queries, q_labels, gallery, g_labels, fars, leave_one_out, d, dl)
    return RetrievalScores(s.recall, s.mean_ap, s.queries, tar)


def beside(pool: Pool | None, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The pool's vectors for a gallery of ``kind``, with their labels; None where the
    setting takes no distractors (its gallery needs raw items)."""
    vectors = None if pool is None else pool.gallery(kind)
    return None if vectors is None or pool is None else (vectors, pool.labels)


def needs_x(artifact: Artifact, reference: Artifact | None) -> bool:
    return artifact.new_model_path is not None or (
        reference is not None and reference.new_model_path is not None
    )


def evaluate(
    table_path: str | Path,
    artifact: Artifact,
    columns: Columns = Columns(),
    reference: Artifact | None = None,
    mixed_fraction: float = 0.5,
    seed: int = 0,
    fars: Sequence[float] = FARS,
    new_col: str | None = None,
    backfill_curve: bool = True,
    distractors: Distractors | str = crowd.TRAINING,
    ceiling: bool = True,
) -> EvalReport:
    """Score every setting on a held-out table; ``reference`` is the full-backfill model.

    The mixed gallery is the table's gallery rows with a seeded ``mixed_fraction``
    of them embedded natively by the new model and the rest evolved. ``new_col``
    overrides ``columns.new``, the column read when the artifact has no encoder.
    ``backfill_curve`` adds new->mixed along the artifact's ranked order and at random.
    ``distractors`` join the galleries built from stored old vectors: TRAINING (the
    artifact's training table, when it is still there), NONE, or given (distractors.load).
    ``ceiling`` scores the oracle adapter fitted on this gallery (ceiling.py).
    """
    if new_col is not None:
        columns = replace(columns, new=new_col)
    if artifact.manifest.method == "calibrated":
        # Its vectors carry the stored constants: the base's plain ones are what is scored.
        raise InputError(
            f"artifact '{artifact.path}' is the calibrated deploy form of "
            f"'{artifact.manifest.training.get('base', '?')}'; evaluate the base artifact, "
            f"whose calibration offset evaluate applies"
        )
    if not 0.0 <= mixed_fraction <= 1.0:
        raise InputError(f"--mixed-fraction is {mixed_fraction}; give a share between 0 and 1")
    table = read_table(table_path, columns, need_x=needs_x(artifact, reference))
    vectors, source = embed(artifact, table, columns)
    q_idx, g_idx, loo = split_roles(table, columns)
    gallery_rows = {kind: v[g_idx] for kind, v in vectors.items()}
    offset = artifact.offset
    gallery_rows["mixed"] = mixed_gallery(
        gallery_rows["evolved"], gallery_rows["new"], mixed_fraction, seed, offset
    )
    q_labels, g_labels = table.labels[q_idx], table.labels[g_idx]
    training = artifact.manifest.training.get("table")
    pool, pool_source = crowd.for_table(
        distractors, training if isinstance(training, str) else None, table, columns
    )
    if pool is not None:
        pool = pool.evolve(OnnxModel(artifact.adapter_path))

    scores = {}
    for setting in SETTINGS:
        query_kind, gallery_kind = setting.split("->")
        queries = vectors[query_kind][q_idx]
        if gallery_kind == "mixed":
            queries = calibration.queries(queries, offset)
        scores[setting] = score(
            queries,
            q_labels,
            gallery_rows[gallery_kind],
            g_labels,
            loo,
            fars,
            beside(pool, gallery_kind),
        )

    calibrated: dict[str, Any] = {"offset": offset}
    if offset:
        # The same mixed gallery with no offset: what the calibration buys on this table.
        plain = mixed_gallery(gallery_rows["evolved"], gallery_rows["new"], mixed_fraction, seed)
        before = score(vectors["new"][q_idx], q_labels, plain, g_labels, loo, ())
        calibrated["new->mixed uncalibrated"] = before.as_dict()

    fusion = artifact.manifest.quality.get("fusion") if artifact.manifest.quality else None
    if isinstance(fusion, dict) and "a" in fusion:
        # The transition mode: stored [o ; psi(o)], queried [a q_old ; b q_new].
        query = np.hstack(
            [fusion["a"] * l2_normalize(vectors["old"]), fusion["b"] * l2_normalize(vectors["new"])]
        )
        gallery = fused_gallery(gallery_rows["old"], gallery_rows["evolved"])
        extra = None
        if pool is not None and pool.count and pool.evolved is not None:
            extra = (fused_gallery(pool.old, pool.evolved), pool.labels)
        scores[FUSED] = score(query[q_idx], q_labels, gallery, g_labels, loo, fars, extra)

    top = None
    if ceiling:
        form = form_of(artifact.manifest.method, table.old.shape[1], vectors["new"].shape[1])
        fitted = oracle(gallery_rows["old"], gallery_rows["new"], form)
        extra = None if pool is None or not pool.count else (fitted(pool.old), pool.labels)
        best = score(
            vectors["new"][q_idx], q_labels, fitted(gallery_rows["old"]), g_labels, loo, fars, extra
        )
        top = Ceiling(form, best, gap_closed(scores["new->evolved"], scores["old->old"], best))

    curves = None
    if backfill_curve:
        path = artifact.backfill_score_path
        ranks = None if path is None else OnnxModel(path)(gallery_rows["old"])[:, 0]
        curves = backfill.measure(
            vectors["new"][q_idx],
            q_labels,
            gallery_rows["evolved"],
            gallery_rows["new"],
            g_labels,
            ranks,
            loo,
            seed,
            offset,
        )

    ref_scores = None
    if reference is not None:
        ref_new, _ = new_embeddings(reference, table, columns, table.x.shape[1] > 0)
        ref_scores = score(ref_new[q_idx], q_labels, ref_new[g_idx], g_labels, loo, fars)
    return EvalReport(
        table=str(table_path),
        artifact=str(artifact.path),
        protocol="leave-one-out" if loo else "query/gallery",
        queries=len(q_idx),
        gallery=len(g_idx),
        scores=scores,
        mixed_fraction=mixed_fraction,
        new_source=source,
        reference=str(reference.path) if reference is not None else None,
        reference_scores=ref_scores,
        derived=derived_figures(scores, ref_scores, ("new->evolved", "new->mixed", FUSED)),
        backfill=curves,
        distractors=crowd.describe(pool, list(scores) + ([CEILING] if top else []), pool_source),
        ceiling=top,
        calibration=calibrated,
    )


def plot_report(report: EvalReport, path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: one group per metric, one bar per setting (plus the reference)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    bars = {name: s.as_dict() for name, s in report.scores.items()}
    if report.reference_scores is not None:
        bars["new*->new* (backfill)"] = report.reference_scores.as_dict()
    metrics = list(next(iter(bars.values())))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(metrics) + 2), 4))
    for i, (name, values) in enumerate(bars.items()):
        heights = [0.0 if np.isnan(values[m]) else values[m] for m in metrics]
        xs = np.arange(len(metrics)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(xs, heights, width, label=name)
    ax.set_xticks(np.arange(len(metrics)), metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(title or f"{Path(report.artifact).name} on {Path(report.table).name}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def backfill_plot_path(path: str | Path) -> Path:
    """The curve's PNG beside the bar chart: report.png -> report-backfill.png."""
    path = Path(path)
    return path.with_name(f"{path.stem}-backfill{path.suffix}")


def plot_backfill(report: EvalReport, path: str | Path) -> Path | None:
    """The partial-backfill line chart, when the report has the curve."""
    if report.backfill is None:
        return None
    title = f"new->mixed by share re-embedded: {Path(report.table).name}"
    return backfill.plot_curves(report.backfill, path, title)
