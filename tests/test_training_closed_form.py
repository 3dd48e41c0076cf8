"""Closed-form adapters recover maps that are known exactly, on real old embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from galleries import Digits

from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.training.closed_form import fit_affine, fit_procrustes, select_affine
from dmu_migrate.training.models import LinearAdapter


def test_procrustes_recovers_a_rotation_into_a_wider_space(digits: Digits) -> None:
    old = digits.old_te  # 32-d, real and correlated
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(48, 32)))
    rotation = q.T.astype(np.float32)  # (32, 48), orthonormal rows: an isometry
    new = l2_normalize(old) @ rotation
    fitted = fit_procrustes(old, new)
    np.testing.assert_allclose(fitted, rotation, atol=1e-4)
    np.testing.assert_allclose(fitted @ fitted.T, np.eye(32), atol=1e-5)
    # The adapter keeps every cosine between stored vectors.
    evolved = LinearAdapter(fitted)(torch.tensor(old)).numpy()
    gram_old = l2_normalize(old) @ l2_normalize(old).T
    np.testing.assert_allclose(evolved @ evolved.T, gram_old, atol=1e-4)


def test_procrustes_refuses_to_drop_dimensions(digits: Digits) -> None:
    with pytest.raises(InputError, match="affine or mlp"):
        fit_procrustes(digits.old_te, digits.old_te[:, :16])


def test_affine_is_the_least_squares_fit_onto_unit_new_vectors(digits: Digits) -> None:
    old = digits.old_te
    rng = np.random.default_rng(1)
    new = l2_normalize(old) @ rng.normal(size=(32, 20)) + rng.normal(size=20)
    fitted_w, fitted_b = fit_affine(old, new, ridge=0.0)
    # Reference by another route: lstsq on [o, 1] against the normalised targets.
    design = np.hstack([l2_normalize(old), np.ones((len(old), 1))]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, l2_normalize(new).astype(np.float64), rcond=None)
    np.testing.assert_allclose(fitted_w, solution[:-1], atol=1e-3)
    np.testing.assert_allclose(fitted_b, solution[-1], atol=1e-3)


def test_affine_recovers_an_exact_map_onto_the_unit_sphere(digits: Digits) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(32, 32)))
    new = l2_normalize(digits.old_te) @ q  # a rotation: its outputs are unit vectors already
    weight, bias = fit_affine(digits.old_te, new, ridge=0.0)
    np.testing.assert_allclose(weight, q, atol=1e-3)
    np.testing.assert_allclose(bias, 0.0, atol=1e-3)


def test_affine_ridge_keeps_an_underdetermined_fit_finite(digits: Digits) -> None:
    # Fewer rows than dimensions: plain normal equations are singular.
    old, new = digits.old_te[:10], digits.x_te[:10]
    weight, bias = fit_affine(old, new)
    assert np.isfinite(weight).all() and np.isfinite(bias).all()
    fit = l2_normalize(old) @ weight + bias
    assert np.abs(fit - l2_normalize(new)).max() < 0.05


def test_affine_shrinks_towards_the_identity_or_zero_as_asked(digits: Digits) -> None:
    old = digits.old_te
    new = digits.x_te[:, :32]  # same width, unrelated to old
    to_identity, _ = fit_affine(old, new, ridge=1e6, prior="identity")
    to_zero, _ = fit_affine(old, new, ridge=1e6)
    np.testing.assert_allclose(to_identity, np.eye(32), atol=1e-3)
    np.testing.assert_allclose(to_zero, 0.0, atol=1e-3)
    with pytest.raises(InputError, match="same-width"):
        fit_affine(old, digits.x_te, prior="identity")


def test_select_affine_picks_the_identity_prior_for_a_space_near_the_old_one(
    digits: Digits,
) -> None:
    """A compatible new space is the old one plus a little: few rows cannot pin W down,
    and shrinking towards the identity recovers it where shrinking to zero cannot."""
    rng = np.random.default_rng(3)
    old = digits.old_te[:60]
    new = l2_normalize(old) + 0.3 * rng.normal(size=old.shape)
    held = np.zeros(len(old), dtype=bool)
    held[::3] = True
    (weight, bias), choice = select_affine(old, new, digits.y_te[:60], held, True)
    assert choice["prior"] == "identity"
    # The winner is refitted on every row, held-out ones included.
    ridge = float(choice["ridge"])
    refit, _ = fit_affine(old, new, ridge=ridge, prior="identity")
    np.testing.assert_allclose(weight, refit, atol=1e-6)


def test_select_affine_keeps_zero_prior_for_an_unrelated_space(digits: Digits) -> None:
    """A rotation of the old space: the identity is a wrong prior."""
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(32, 32)))
    new = l2_normalize(digits.old_te) @ q
    held = np.arange(len(new)) % 5 == 0
    (weight, bias), choice = select_affine(digits.old_te, new, digits.y_te, held, True)
    assert choice["prior"] == "zero"
    evolved = l2_normalize(l2_normalize(digits.old_te) @ weight + bias)
    assert float(np.mean(np.sum(evolved * new, axis=1))) > 0.95
