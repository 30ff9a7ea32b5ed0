"""Tests of landscape/core/masks.py, the one vocabulary of mask names.

References: the free entries of every mask name written out as index sets for ``d = 2`` (token
dimension 3) and for a wider token (``d = 2``, token dimension 5), independently of the slicing in
the module; the family ``"blocks"`` mask against hand-built symbolic blocks; and the old entry
points (``landscape.core.model.make_mask``, ``landscape.experiment.train.train_mask``,
``landscape.numeric.free_entries``) giving exactly these masks, aliases included.
"""

from __future__ import annotations

import itertools

import pytest
import sympy
import torch

import landscape
from landscape.core import masks
from landscape.core.masks import ALIASES, FAMILY_MASKS, MASKS, SPEC_MASKS, canonical_mask, make_mask
from landscape.core.model import ModelSpec, flatten_params, param_shapes
from landscape.experiment.train import TrainConfig, train_mask
from landscape.numeric import free_entries
from landscape.theory.families import Problem, get_family


def _entries(D: int, rows: range, cols: range) -> set[tuple[int, int]]:
    return set(itertools.product(rows, cols))


def _expected(name: str, letter: str, D: int, d: int) -> set[tuple[int, int]]:
    """Free entries written out: x = rows/cols 0..d-1, label = d..D-1."""
    x, y = range(d), range(d, D)
    covariate, corner = _entries(D, x, x), _entries(D, y, y)
    if name == "full":
        return _entries(D, range(D), range(D))
    if name == "paper":
        return covariate | corner if letter in "PV" else covariate
    if name == "sparse":
        return corner if letter in "PV" else covariate
    raise AssertionError(name)


def _as_set(t: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in t.nonzero().tolist()}


SPECS = [ModelSpec.linear(2, 2), ModelSpec.linear(2, 1, heads=2), ModelSpec.kernel(2, 2, ["exp", "linear"]),
         ModelSpec(d=2, layers=1, token_dim=5)]


def test_vocabulary() -> None:
    assert set(MASKS) == {"full", "paper", "sparse", "blocks"}
    assert all(isinstance(doc, str) and len(doc) > 20 for doc in MASKS.values())
    assert ALIASES == {"all": "full"}
    assert set(SPEC_MASKS) | set(FAMILY_MASKS) == set(MASKS) and not set(SPEC_MASKS) & set(FAMILY_MASKS)
    assert landscape.make_mask is make_mask
    # the old import path is the same function, not a second definition
    from landscape.core import model

    assert model.make_mask is masks.make_mask


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
@pytest.mark.parametrize("name", ["full", "paper", "sparse"])
def test_spec_masks_equal_written_out_index_sets(spec: ModelSpec, name: str) -> None:
    m = make_mask(spec, name)
    assert list(m) == list(param_shapes(spec))
    for key, t in m.items():
        assert t.dtype == torch.bool and tuple(t.shape) == param_shapes(spec)[key]
        assert _as_set(t) == _expected(name, key.rsplit(".", 1)[1], spec.token_dim, 2), (key, name)
    # train_mask is the same mask
    tm = train_mask(spec, name)
    assert list(tm) == list(m) and all(torch.equal(tm[k], m[k]) for k in m)


def test_explicit_d_moves_the_covariate_block() -> None:
    spec = ModelSpec.linear(2, 1)
    m = make_mask(spec, "paper", 1)
    assert _as_set(m["layer0.head0.Q"]) == {(0, 0)}
    assert _as_set(m["layer0.head0.P"]) == {(0, 0)} | _entries(3, range(1, 3), range(1, 3))


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.describe())
def test_alias_all_gives_the_full_mask(spec: ModelSpec) -> None:
    assert canonical_mask("all") == "full" and canonical_mask("full") == "full"
    full, alias = make_mask(spec, "full"), make_mask(spec, "all")
    assert all(torch.equal(full[k], alias[k]) for k in full)
    assert all(bool(v.all()) for v in alias.values())
    tm = train_mask(spec, "all")
    assert all(torch.equal(tm[k], full[k]) for k in full)


def test_blocks_from_hand_built_symbolic_blocks() -> None:
    """Free blocks are those with a symbol: P moves its label column and corner, Q its covariate block."""
    spec = ModelSpec.linear(2, 1)
    a, b = sympy.symbols("a b")
    P = sympy.Matrix([[0, 0, a], [0, 0, 0], [0, 0, b]])  # label column (entry (0, 2)) and corner
    Q = sympy.Matrix([[a, 0, 0], [0, 1, 0], [0, 0, 7]])  # covariate block; constants elsewhere stay fixed
    m = make_mask(spec, "blocks", family_blocks={"layer0.head0.P": P, "layer0.head0.Q": Q})
    assert _as_set(m["layer0.head0.P"]) == _entries(3, range(2), range(2, 3)) | {(2, 2)}
    assert _as_set(m["layer0.head0.Q"]) == _entries(3, range(2), range(2))
    # a name the family leaves out is fixed
    m = make_mask(spec, "blocks", family_blocks={"layer0.head0.Q": Q})
    assert _as_set(m["layer0.head0.P"]) == set()


def test_free_entries_is_the_flattened_mask() -> None:
    """The certificate's names: the same masks (flattened), 'all' and 'full' alike, 'blocks' from the family."""
    fam = get_family("pgd", Problem(d=2, layers=2, attention="linear"))
    spec = fam.spec
    for name in ("full", "all", "paper", "sparse"):
        ref = flatten_params({k: v.double() for k, v in make_mask(spec, name).items()}, spec) > 0.5
        assert torch.equal(free_entries(fam, name), ref), name
    assert torch.equal(free_entries(fam, "all"), torch.ones(spec_size(spec), dtype=torch.bool))
    assert torch.equal(free_entries(fam), free_entries(fam, "full"))
    # pgd: P_l = diag(0, 1) is constant, Q_l = -a_l diag(I, 0): only the covariate blocks of Q move
    blocks = free_entries(fam, "blocks")
    expected = {k: torch.zeros(s, dtype=torch.float64) for k, s in param_shapes(spec).items()}
    for l in range(2):
        expected[f"layer{l}.head0.Q"][:2, :2] = 1.0
    assert torch.equal(blocks, flatten_params(expected, spec) > 0.5)
    assert int(blocks.sum()) == 2 * 4


def spec_size(spec: ModelSpec) -> int:
    return sum(a * b for a, b in param_shapes(spec).values())


def test_training_stores_the_spelling_it_was_given() -> None:
    """Stored runs keep their mask string (and so their config hash); training takes the spec masks only."""
    cfg = TrainConfig(task="linear", d=2, n=4, mask="paper", seeds=1, steps=1, batch=4, device="cpu")
    assert cfg.to_dict()["mask"] == "paper"
    with pytest.raises(ValueError, match=r"mask must be one of 'full', 'paper', 'sparse'; got 'blocks'"):
        TrainConfig(task="linear", d=2, n=4, mask="blocks", seeds=1, steps=1, batch=4, device="cpu")


def test_bad_names() -> None:
    spec = ModelSpec.linear(2, 1)
    with pytest.raises(ValueError, match=r"unknown mask 'dense'; accepted: 'full' \(alias 'all'\), 'paper', "
                                         r"'sparse', 'blocks'$"):
        make_mask(spec, "dense")
    with pytest.raises(ValueError, match=r"mask 'blocks' needs the family's blocks"):
        make_mask(spec, "blocks")
    with pytest.raises(ValueError, match=r"unknown mask 'blocks'; accepted: 'full' \(alias 'all'\), 'paper', 'sparse'$"):
        train_mask(spec, "blocks")
    fam = get_family("pgd", Problem(d=2, layers=1, attention="linear"))
    with pytest.raises(ValueError, match=r"unknown mask 'everything'; accepted: .*'blocks', or a dict of boolean masks"):
        free_entries(fam, "everything")
