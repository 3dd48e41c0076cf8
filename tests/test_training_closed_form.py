"""Closed-form adapters recover maps that are known exactly, on real old embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Digits

from dmu_migrate.errors import InputError
from dmu_migrate.metrics import l2_normalize
from dmu_migrate.training.closed_form import fit_affine, fit_procrustes
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
