"""Loss terms of method.md checked against references worked out by hand.

Every reference below is written out with plain ``math`` on explicit numbers
(or a two-line logsumexp), never by calling the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from dmu_migrate.training.losses import (
    CosFaceLoss,
    ForwardAdaptationLoss,
    PairedAdapterLoss,
    SelectiveCompatibilityLoss,
    class_prototypes,
    discriminativeness,
    info_nce,
)

R2 = 1.0 / math.sqrt(2.0)


def ce(logits: list[float], target: int) -> float:
    """Cross-entropy of one row of logits, by hand: log sum exp(z) - z[target]."""
    return math.log(sum(math.exp(z) for z in logits)) - logits[target]


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# --- class_prototypes -------------------------------------------------------------


def test_prototypes_are_normalized_means_of_normalized_old_vectors() -> None:
    # Class 0: [3,4] -> [0.6,0.8] and [1,0]; mean direction [1.6,0.8] ~ [2,1]/sqrt(5).
    # (Averaging the raw vectors would give [4,4] ~ [1,1]/sqrt(2) instead.)
    # Class 1: [0,2] -> [0,1].
    old = t([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    protos = class_prototypes(old, labels, num_classes=2)
    expected = t([[2 / math.sqrt(5), 1 / math.sqrt(5)], [0.0, 1.0]])
    torch.testing.assert_close(protos, expected)


def test_prototype_of_class_without_samples_is_zero_not_nan() -> None:
    old = t([[1.0, 0.0], [0.0, 1.0]])
    protos = class_prototypes(old, torch.tensor([0, 2]), num_classes=3)
    torch.testing.assert_close(protos[1], t([[0.0, 0.0]])[0])
    torch.testing.assert_close(protos[2], t([[0.0, 1.0]])[0])


# --- discriminativeness -----------------------------------------------------------


def test_discriminativeness_matches_softmax_by_hand() -> None:
    # P0 = [1,0], P1 = [0,1]; o = [3,4] -> [0.6,0.8], label 1, s = 2.
    # logits [1.2, 1.6]; q = e^1.6 / (e^1.2 + e^1.6) = 1 / (1 + e^-0.4).
    protos = t([[1.0, 0.0], [0.0, 1.0]])
    q = discriminativeness(t([[3.0, 4.0]]), torch.tensor([1]), protos, scale=2.0)
    assert q.shape == (1,)
    assert q.item() == pytest.approx(1 / (1 + math.exp(-0.4)), rel=1e-9)


def test_discriminativeness_extremes() -> None:
    protos = t([[1.0, 0.0], [0.0, 1.0]])
    old = t(
        [
            [1.0, 0.0],  # on its own prototype, classes orthogonal: q = 1/(1+e^-30) ~ 1
            [1.0, 1.0],  # halfway between P0 and P1: equal logits, q = 0.5
            [0.0, 5.0],  # on the wrong prototype (labelled 0): q = 1/(1+e^30) ~ 0
        ]
    )
    q = discriminativeness(old, torch.tensor([0, 0, 0]), protos, scale=30.0)
    assert q[0].item() == pytest.approx(1.0, abs=1e-12)
    assert q[0].item() > 0.999
    assert q[1].item() == pytest.approx(0.5, abs=1e-12)
    assert q[2].item() < 1e-12


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# Three prototypes at 0, 90 and 45 degrees, one old vector between P0 and P2.
PROTOS3 = t([[1.0, 0.0], [0.0, 1.0], [R2, R2]])
OLD3 = t([[2.0, 1.0]])  # -> [2,1]/sqrt(5): cos to P0 = 2/sqrt5, P1 = 1/sqrt5, P2 = 3/sqrt10
COS3 = [2 / math.sqrt(5), 1 / math.sqrt(5), 3 / math.sqrt(10)]


def test_margin_discriminativeness_is_two_way_softmax_against_hardest_wrong_class() -> None:
    s = 4.0
    # Label 0: the hardest wrong class is P2 (cos 0.949 > P1's 0.447).
    q = discriminativeness(OLD3, torch.tensor([0]), PROTOS3, s, measure="margin")
    assert q.item() == pytest.approx(sigmoid(s * (COS3[0] - COS3[2])), rel=1e-9)
    # Label 2 is the closest prototype: q > 0.5, against P0 this time.
    q = discriminativeness(OLD3, torch.tensor([2]), PROTOS3, s, measure="margin")
    assert q.item() == pytest.approx(sigmoid(s * (COS3[2] - COS3[0])), rel=1e-9)
    assert q.item() > 0.5


def test_entropy_discriminativeness_is_label_free_normalised_entropy() -> None:
    s = 4.0
    z = [s * c for c in COS3]
    p = [math.exp(v) / sum(math.exp(w) for w in z) for v in z]
    expected = 1 - (-sum(pi * math.log(pi) for pi in p)) / math.log(3)
    for label in (0, 1, 2):  # the label does not matter
        q = discriminativeness(OLD3, torch.tensor([label]), PROTOS3, s, measure="entropy")
        assert q.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("measure", ["probability", "margin", "entropy"])
def test_every_measure_is_one_for_a_perfect_old_feature_and_lower_for_an_ambiguous_one(
    measure: str,
) -> None:
    protos = t([[1.0, 0.0], [0.0, 1.0]])
    old = t([[1.0, 0.0], [1.0, 1.0]])
    q = discriminativeness(old, torch.tensor([0, 0]), protos, scale=60.0, measure=measure)
    assert q[0].item() == pytest.approx(1.0, abs=1e-12)
    assert 0.0 <= q[1].item() < 0.6


def test_unknown_measure_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown discriminativeness"):
        discriminativeness(OLD3, torch.tensor([0]), PROTOS3, 1.0, measure="variance")


# --- CosFaceLoss ------------------------------------------------------------------


def test_cosface_matches_manual_margin_cross_entropy() -> None:
    s, m = 4.0, 0.25
    loss = CosFaceLoss(dim=2, num_classes=3, scale=s, margin=m).double()
    loss.weight.data = t([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # -> [1,0], [0,1], [r2,r2]
    emb = t([[5.0, 0.0], [1.0, 1.0]])  # -> [1,0], [r2,r2]
    labels = torch.tensor([0, 2])
    # cos row 0: [1, 0, r2], margin on class 0 -> [1-m, 0, r2]
    # cos row 1: [r2, r2, 1], margin on class 2 -> [r2, r2, 1-m]
    row0 = [s * (1 - m), 0.0, s * R2]
    row1 = [s * R2, s * R2, s * (1 - m)]
    expected = (ce(row0, 0) + ce(row1, 2)) / 2
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-9)


def test_cosface_margin_makes_the_loss_larger() -> None:
    weight = t([[1.0, 0.0], [0.0, 1.0]])
    emb, labels = t([[1.0, 0.2]]), torch.tensor([0])
    values = []
    for margin in (0.0, 0.3):
        loss = CosFaceLoss(2, 2, scale=10.0, margin=margin).double()
        loss.weight.data = weight.clone()
        values.append(loss(emb, labels).item())
    assert values[1] > values[0]


# --- SelectiveCompatibilityLoss ---------------------------------------------------

PROTOS = t([[1.0, 0.0], [0.0, 1.0]])
NEW = t([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # -> [1,0], [r2,r2], [0,1]
LABELS = torch.tensor([0, 1, 0])
S = 3.0
# Per-sample CE of s * P . f_i by hand:
CE0 = ce([S, 0.0], 0)  # f on its own prototype: small
CE1 = ce([S * R2, S * R2], 1)  # halfway: log 2
CE2 = ce([0.0, S], 0)  # f on the wrong prototype: large


def test_sbc_gamma_zero_is_plain_mean_cross_entropy() -> None:
    q = torch.tensor([0.9, 0.1, 0.01], dtype=torch.float64)  # ignored when gamma = 0
    loss = SelectiveCompatibilityLoss(scale=S, gamma=0.0)(NEW, LABELS, PROTOS, q)
    assert loss.item() == pytest.approx((CE0 + CE1 + CE2) / 3, rel=1e-9)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_sbc_samples_with_q_one_keep_full_weight(gamma: float) -> None:
    q = torch.ones(3, dtype=torch.float64)
    loss = SelectiveCompatibilityLoss(scale=S, gamma=gamma)(NEW, LABELS, PROTOS, q)
    assert loss.item() == pytest.approx((CE0 + CE1 + CE2) / 3, rel=1e-9)


def test_sbc_gamma_weights_samples_by_q_power() -> None:
    gamma = 2.0
    q = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
    w = [1.0, 0.25, 0.04]  # q ** 2
    expected = (w[0] * CE0 + w[1] * CE1 + w[2] * CE2) / sum(w)
    loss = SelectiveCompatibilityLoss(scale=S, gamma=gamma)(NEW, LABELS, PROTOS, q)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # The poorly recognised sample 2 (largest CE, small q) now counts for less.
    plain = SelectiveCompatibilityLoss(scale=S, gamma=0.0)(NEW, LABELS, PROTOS, q)
    assert loss.item() < plain.item()


def test_sbc_sample_with_q_zero_gets_no_gradient() -> None:
    new = NEW.clone().requires_grad_(True)
    q = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    SelectiveCompatibilityLoss(scale=S, gamma=1.0)(new, LABELS, PROTOS, q).backward()
    assert new.grad is not None
    assert torch.all(new.grad[2] == 0)
    assert new.grad[1].abs().sum() > 0


# --- info_nce ---------------------------------------------------------------------


def test_info_nce_matches_manual_per_sample_values() -> None:
    tau = 0.5
    anchor = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    positive = [[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    a = [unit(v) for v in anchor]
    p = [unit(v) for v in positive]
    expected = [ce([dot(a[i], p[j]) / tau for j in range(3)], i) for i in range(3)]
    # e.g. row 0: sims [1, r2, 0] / 0.5 -> CE against column 0.
    assert expected[0] == pytest.approx(ce([2.0, 2 * R2, 0.0], 0))
    got = info_nce(t(anchor), t(positive), tau)
    assert got.shape == (3,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_info_nce_is_near_zero_for_aligned_orthogonal_pairs() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    got = info_nce(eye, 2 * eye, tau=0.01)  # logits 100 on the diagonal, 0 elsewhere
    assert torch.all(got < 1e-12)


# --- ForwardAdaptationLoss --------------------------------------------------------


def _fa_setup(detach: bool) -> tuple[ForwardAdaptationLoss, CosFaceLoss]:
    # A nonzero margin on the classifier: method.md's L_fa uses CE(s * W . e_i), no margin.
    classifier = CosFaceLoss(dim=2, num_classes=2, scale=2.0, margin=0.3).double()
    classifier.weight.data = t([[1.0, 0.0], [0.0, 3.0]])  # -> [1,0], [0,1]
    return ForwardAdaptationLoss(classifier, tau=0.5, beta=2.0, detach=detach), classifier


EVOLVED = [[1.0, 0.0], [1.0, 1.0]]  # -> [1,0], [r2,r2]
NEW_FA = [[0.0, 3.0], [1.0, 0.0]]  # -> [0,1], [1,0]
LABELS_FA = torch.tensor([0, 1])
Q_FA = [1.0, 0.25]


def test_forward_adaptation_matches_manual_weighted_sum() -> None:
    loss_fn, _ = _fa_setup(detach=True)
    s, tau, beta = 2.0, 0.5, 2.0
    e = [unit(v) for v in EVOLVED]
    f = [unit(v) for v in NEW_FA]
    w = [[1.0, 0.0], [0.0, 1.0]]
    per = []
    for i in range(2):
        cls = ce([s * dot(e[i], w[c]) for c in range(2)], int(LABELS_FA[i]))
        nce = ce([dot(e[i], f[j]) / tau for j in range(2)], i)
        per.append(cls + nce)
    v = [1 + beta * (1 - qi) for qi in Q_FA]  # [1, 2.5]
    expected = (v[0] * per[0] + v[1] * per[1]) / (v[0] + v[1])
    got = loss_fn(t(EVOLVED), t(NEW_FA), LABELS_FA, torch.tensor(Q_FA, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_forward_adaptation_detach_blocks_gradients_to_new_and_classifier() -> None:
    loss_fn, classifier = _fa_setup(detach=True)
    evolved = t(EVOLVED).requires_grad_(True)
    new = t(NEW_FA).requires_grad_(True)
    loss_fn(evolved, new, LABELS_FA, torch.tensor(Q_FA, dtype=torch.float64)).backward()
    assert new.grad is None
    assert classifier.weight.grad is None
    assert evolved.grad is not None and evolved.grad.abs().sum() > 0


def test_forward_adaptation_without_detach_trains_new_and_classifier() -> None:
    loss_fn, classifier = _fa_setup(detach=False)
    evolved = t(EVOLVED).requires_grad_(True)
    new = t(NEW_FA).requires_grad_(True)
    loss_fn(evolved, new, LABELS_FA, torch.tensor(Q_FA, dtype=torch.float64)).backward()
    assert new.grad is not None and new.grad.abs().sum() > 0
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0
    assert evolved.grad is not None and evolved.grad.abs().sum() > 0


def test_forward_adaptation_weights_poor_old_features_more() -> None:
    # v = 1 when q = 1, so q = [1, 1] is the plain mean of the two per-sample losses;
    # dropping one sample's q to 0 (v = 1 + beta) pulls the mean towards its loss.
    loss_fn, _ = _fa_setup(detach=True)
    ev, nw = t(EVOLVED), t(NEW_FA)

    def run(q: list[float]) -> float:
        return float(loss_fn(ev, nw, LABELS_FA, torch.tensor(q, dtype=torch.float64)).item())

    plain, low0, low1 = run([1.0, 1.0]), run([0.0, 1.0]), run([1.0, 0.0])
    assert min(low0, low1) < plain < max(low0, low1)


# --- PairedAdapterLoss (adapter-only mode) ----------------------------------------


def test_paired_adapter_loss_matches_manual_terms_without_labels() -> None:
    tau = 0.5
    e = [unit(v) for v in EVOLVED]
    n = [unit(v) for v in NEW_FA]
    nce = [ce([dot(e[i], n[j]) / tau for j in range(2)], i) for i in range(2)]
    cos = [1 - dot(e[i], n[i]) for i in range(2)]  # [1 - 0, 1 - r2]
    assert cos[1] == pytest.approx(1 - R2)
    got = PairedAdapterLoss(tau=tau, scale=2.0, beta=1.0)(t(EVOLVED), t(NEW_FA))
    assert set(got) == {"nce", "cos", "loss"}
    assert got["nce"].item() == pytest.approx(sum(nce) / 2, rel=1e-9)
    assert got["cos"].item() == pytest.approx(sum(cos) / 2, rel=1e-9)
    assert got["loss"].item() == pytest.approx((sum(nce) + sum(cos)) / 2, rel=1e-9)


def test_paired_adapter_loss_with_labels_adds_class_term_and_weights_poor_features() -> None:
    tau, s, beta = 0.5, 2.0, 2.0
    protos = t([[1.0, 0.0], [0.0, 1.0]])  # the new model's class prototypes
    e = [unit(v) for v in EVOLVED]
    n = [unit(v) for v in NEW_FA]
    v = [1 + beta * (1 - qi) for qi in Q_FA]  # [1, 2.5]
    per_ce = [
        ce([s * dot(e[i], protos[c].tolist()) for c in range(2)], int(LABELS_FA[i]))
        for i in range(2)
    ]
    per_nce = [ce([dot(e[i], n[j]) / tau for j in range(2)], i) for i in range(2)]
    per_cos = [1 - dot(e[i], n[i]) for i in range(2)]

    def weighted(values: list[float]) -> float:
        return (v[0] * values[0] + v[1] * values[1]) / (v[0] + v[1])

    got = PairedAdapterLoss(tau=tau, scale=s, beta=beta)(
        t(EVOLVED), t(NEW_FA), torch.tensor(Q_FA, dtype=torch.float64), LABELS_FA, protos
    )
    assert got["ce"].item() == pytest.approx(weighted(per_ce), rel=1e-9)
    assert got["nce"].item() == pytest.approx(weighted(per_nce), rel=1e-9)
    expected = weighted(per_ce) + weighted(per_nce) + weighted(per_cos)
    assert got["loss"].item() == pytest.approx(expected, rel=1e-9)


def test_paired_adapter_loss_is_near_zero_when_evolved_equals_new() -> None:
    eye = torch.eye(3, dtype=torch.float64)
    got = PairedAdapterLoss(tau=0.01, scale=1.0, beta=1.0)(3 * eye, eye)
    assert got["loss"].item() < 1e-9
