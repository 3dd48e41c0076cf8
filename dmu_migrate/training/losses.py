"""The loss terms of ../shared/method.md, one small module each.

Notation: f = normalised new embedding, o = normalised stored old embedding,
e = normalised evolved embedding psi(o), y = class code, s = logit scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dmu_migrate.training.distributed import gather, shard, weighted_mean


def class_prototypes(old: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """P_c = normalize(mean of old embeddings of class c): the old model's view of each class.

    Built from stored embeddings, so no old classifier head is needed and
    classes the old model never saw still get a prototype (as BCT does).
    """
    sums = torch.zeros(num_classes, old.shape[1], dtype=old.dtype, device=old.device)
    sums.index_add_(0, labels, F.normalize(old, dim=1))
    return F.normalize(sums, dim=1)


def discriminativeness(
    old: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    scale: float,
    measure: str = "probability",
) -> torch.Tensor:
    """q_i in [0, 1]: how well the old model recognises sample i (1 = perfectly).

    probability: softmax_c(s * P_c . o_i)[y_i], the paper's reading.
    margin: sigmoid(s * (cos(o_i, P_y) - max_{c != y} cos(o_i, P_c))), a two-way
        softmax against the hardest wrong class only, so that a crowd of
        moderately similar classes does not count against a clear winner.
    entropy: 1 - H(softmax(s * P . o_i)) / log C, label-free (the label is
        ignored), so it can also be computed on gallery items at deploy time.
    """
    cos = F.normalize(old, dim=1) @ prototypes.T
    if measure == "probability":
        return (scale * cos).softmax(dim=1).gather(1, labels[:, None]).squeeze(1)
    if measure == "margin":
        own = cos.gather(1, labels[:, None]).squeeze(1)
        others = cos.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        return torch.sigmoid(scale * (own - others))
    if measure == "entropy":
        log_p = (scale * cos).log_softmax(dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        return 1.0 - entropy / math.log(cos.shape[1])
    raise ValueError(f"unknown discriminativeness measure '{measure}'")


class CosFaceLoss(nn.Module):
    """Normalised-softmax with an additive cosine margin on a trainable classifier W."""

    def __init__(self, dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale = scale
        self.margin = margin

    def logits(self, emb: torch.Tensor, detach_weight: bool = False) -> torch.Tensor:
        weight = self.weight.detach() if detach_weight else self.weight
        return F.normalize(emb, dim=1) @ F.normalize(weight, dim=1).T

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.logits(emb)
        margin = F.one_hot(labels, cos.shape[1]).to(cos.dtype) * self.margin
        return F.cross_entropy(self.scale * (cos - margin), labels)


class SelectiveCompatibilityLoss(nn.Module):
    """L_sbc = sum_i w_i CE(s * P . f_i, y_i) / sum_i w_i with w_i = q_i ** gamma.

    gamma = 0 weights every sample equally (plain BCT with prototypes); gamma > 0
    inherits old knowledge only where the old feature was discriminative.
    """

    def __init__(self, scale: float, gamma: float) -> None:
        super().__init__()
        self.scale = scale
        self.gamma = gamma

    def forward(
        self, new: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, q: torch.Tensor
    ) -> torch.Tensor:
        logits = self.scale * F.normalize(new, dim=1) @ prototypes.T
        ce = F.cross_entropy(logits, labels, reduction="none")
        return weighted_mean(ce, q.pow(self.gamma))


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-sample InfoNCE of anchor_i -> positive_i against the other positives in the batch.

    Under torchrun the negatives are the positives of every rank's batch, so
    W ranks with batch B rank against as many negatives as one process with W*B.
    """
    positives = gather(F.normalize(positive, dim=1))
    logits = F.normalize(anchor, dim=1) @ positives.T / tau
    rank, _ = shard()
    target = torch.arange(len(anchor), device=anchor.device) + rank * len(anchor)
    return F.cross_entropy(logits, target, reduction="none")


class ForwardAdaptationLoss(nn.Module):
    """L_fa = sum_i v_i [CE(s * W . e_i, y_i) + InfoNCE(e_i -> f_i)] / sum_i v_i.

    v_i = 1 + beta (1 - q_i) gives poor old features more of the adapter's
    capacity. With ``detach`` the new embeddings and the classifier are
    targets only: the adapter follows the new space and cannot drag it back.
    """

    def __init__(self, classifier: CosFaceLoss, tau: float, beta: float, detach: bool) -> None:
        super().__init__()
        self.classifier = classifier
        self.tau = tau
        self.beta = beta
        self.detach = detach

    def forward(
        self, evolved: torch.Tensor, new: torch.Tensor, labels: torch.Tensor, q: torch.Tensor
    ) -> torch.Tensor:
        target = new.detach() if self.detach else new
        cls_logits = self.classifier.scale * self.classifier.logits(evolved, self.detach)
        per_sample = F.cross_entropy(cls_logits, labels, reduction="none")
        per_sample = per_sample + info_nce(evolved, target, self.tau)
        return weighted_mean(per_sample, 1.0 + self.beta * (1.0 - q))


class PairedAdapterLoss(nn.Module):
    """Adapter-only mode: fit psi to a fixed new model from paired (o_i, n_i).

    per sample: InfoNCE(e_i -> n_i, tau) + (1 - cos(e_i, n_i))
                [+ CE(s * Pn . e_i, y_i) with Pn the new model's class prototypes,
                 when labels are given]
    weighted by v_i = 1 + beta (1 - q_i) as in L_fa. InfoNCE alone only ranks
    within a batch; the cosine term pins e_i onto n_i itself, and the class
    term pulls evolved items to where the new model puts their class.
    Returns the weighted total and each term (for the training log).
    """

    def __init__(self, tau: float, scale: float, beta: float) -> None:
        super().__init__()
        self.tau = tau
        self.scale = scale
        self.beta = beta

    def forward(
        self,
        evolved: torch.Tensor,
        new: torch.Tensor,
        q: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        new_prototypes: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        e = F.normalize(evolved, dim=1)
        terms = {
            "nce": info_nce(e, new, self.tau),
            "cos": 1.0 - (e * F.normalize(new, dim=1)).sum(1),
        }
        if labels is not None and new_prototypes is not None:
            logits = self.scale * e @ new_prototypes.T
            terms["ce"] = F.cross_entropy(logits, labels, reduction="none")
        v = torch.ones_like(terms["nce"]) if q is None else 1.0 + self.beta * (1.0 - q)
        out = {name: weighted_mean(value, v) for name, value in terms.items()}
        out["loss"] = sum(out.values(), torch.zeros((), dtype=e.dtype, device=e.device))
        return out
