"""GIN-virtual and its OGB-style featuriser: feature values, invariance to atom numbering,
batching, and that it can fit a few molecules."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from force2geo.models.gin import (
    ATOM_FEATURE_SIZES,
    BOND_FEATURE_SIZES,
    GINConfig,
    GINVirtual,
    collate_graphs,
    mol_graph,
    smiles_graph,
)

SMILES = ["CCO", "C[C@@H](N)C(=O)O", "Oc1ccccc1", "c1ccncc1", "CC(=O)Nc1ccccc1",
          "C/C=C/C#N", "[NH3+]CC(=O)[O-]"]


def small_model(seed=0, **config):
    torch.manual_seed(seed)
    return GINVirtual(GINConfig(hidden_channels=32, num_layers=3, **config)).double()


def test_features_of_acetic_acid_and_pyridine():
    atoms, index, bonds = smiles_graph("CC(=O)O")
    # heavy atoms C, C, O, O; columns: Z-1, chirality, degree, charge+5, nH, radicals,
    # hybridisation, aromatic, ring
    assert atoms.tolist() == [[5, 0, 1, 5, 3, 0, 2, 0, 0], [5, 0, 3, 5, 0, 0, 1, 0, 0],
                              [7, 0, 1, 5, 0, 0, 1, 0, 0], [7, 0, 1, 5, 1, 0, 1, 0, 0]]
    assert index.shape == (2, 6) and bonds.shape == (6, 3)
    pairs = {tuple(p) for p in index.T.tolist()}
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (1, 3), (3, 1)}
    double = [k for k, p in enumerate(index.T.tolist()) if set(p) == {1, 2}]
    assert all(bonds[k].tolist() == [1, 0, 1] for k in double)  # double, no stereo, conj.
    atoms, _, bonds = smiles_graph("c1ccncc1")
    assert (atoms[:, 7] == 1).all() and (atoms[:, 8] == 1).all()
    assert (bonds[:, 0] == 3).all()  # aromatic
    charged, _, _ = smiles_graph("[NH3+]CC(=O)[O-]")
    assert charged[0, 3] == 6 and charged[-1, 3] == 4  # +1 and -1
    stereo = smiles_graph("C/C=C/C#N")[2]
    assert 2 in stereo[:, 1].tolist() or 4 in stereo[:, 1].tolist()  # E / trans
    for smiles in SMILES:
        a, i, b = smiles_graph(smiles)
        assert (a < np.array(ATOM_FEATURE_SIZES)).all() and (b < np.array(BOND_FEATURE_SIZES)).all()


def test_unparsable_smiles_is_an_error():
    with pytest.raises(ValueError, match="cannot parse"):
        smiles_graph("C1CC")


@pytest.mark.parametrize("smiles", SMILES)
def test_embedding_is_invariant_to_atom_numbering(smiles):
    model = small_model().eval()
    mol = Chem.MolFromSmiles(smiles)
    rng = np.random.default_rng(1)
    reference = model.representation(collate_graphs([mol_graph(mol)]))
    for _ in range(3):
        order = rng.permutation(mol.GetNumAtoms()).tolist()
        renumbered = Chem.RenumberAtoms(mol, order)
        assert Chem.MolToSmiles(renumbered) == Chem.MolToSmiles(mol)
        out = model.representation(collate_graphs([mol_graph(renumbered)]))
        torch.testing.assert_close(out, reference, rtol=1e-10, atol=1e-10)


def test_batched_equals_one_by_one_and_molecules_differ():
    model = small_model(pooling="mean").eval()
    graphs = [smiles_graph(s) for s in SMILES]
    together = model(collate_graphs(graphs))
    alone = torch.cat([model(collate_graphs([g])) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)
    embeddings = model.representation(collate_graphs(graphs))
    assert embeddings.shape == (len(SMILES), 32)
    distances = torch.cdist(embeddings, embeddings) + torch.eye(len(SMILES))
    assert distances.min() > 1e-3


def test_gin_overfits_a_few_molecules():
    """Seeded, float64: deterministic. Each molecule is in the batch four times: BatchNorm
    keeps an unbiased running variance, which over the seven graphs alone is 7/6 of the
    batch's own, and that mismatch, not the fit, set the eval-mode error (0.06-0.15 of the
    start over seeds 0-5; in train mode the fit was 1e-4 of it). Over seeds 0-5 now: start
    4.9-5.2 eV (> 1), final / start 0.015-0.036 (< 0.1)."""
    model = small_model(seed=3)
    graph = collate_graphs([smiles_graph(s) for s in SMILES * 4])
    target = torch.linspace(2.0, 8.0, len(SMILES), dtype=torch.float64).repeat(4)  # eV-like
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=300)
    model.train()
    start = (model(graph) - target).abs().mean().item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = (model(graph) - target).abs().mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        final = (model(graph) - target).abs().mean().item()
    assert start > 1.0 and final < 0.1 * start
