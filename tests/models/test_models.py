"""Every backbone through one contract: symmetries, forces = -dE/dx, batching, a reference
implementation, the radius graph, atom references and a tiny overfit."""

import math
import resource

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.models import (
    MODELS,
    Batch,
    FoundationPaiNNConfig,
    MACEConfig,
    PaiNN,
    PaiNNConfig,
    Potential,
    SchNetConfig,
    build_backbone,
    energy_and_forces,
    fit_atom_refs,
    neighbor_pairs,
    radius_graph,
)
from force2geo.models.cpu import keep_freed_memory

SMALL = {
    "painn": PaiNNConfig(hidden_channels=16, num_layers=3, num_rbf=12, cutoff=4.0),
    "painn_foundation": FoundationPaiNNConfig(hidden_channels=16, num_layers=3, num_rbf=12,
                                              cutoff=4.0, num_elements=20),
    "schnet": SchNetConfig(hidden_channels=16, num_filters=12, num_interactions=3,
                           num_gaussians=10, cutoff=4.0),
    # Registered in MODELS only where mace-torch is installed.
    "mace": MACEConfig(r_max=4.0, hidden_irreps="8x0e+8x1o", max_ell=2, correlation=2,
                       num_interactions=2, num_bessel=6, radial_mlp=(8, 8), mlp_irreps="4x0e",
                       elements=(1, 6, 7, 8)),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    spinning OpenMP workers make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- helpers
def random_molecule(rng, n_atoms):
    """Atoms grown one by one 1.0-1.6 Å from an earlier atom, never closer than 0.95 Å."""
    z = rng.choice([1, 6, 7, 8], size=n_atoms, p=[0.5, 0.3, 0.1, 0.1])
    pos = [np.zeros(3)]
    while len(pos) < n_atoms:
        step = rng.normal(size=3)
        trial = pos[rng.integers(len(pos))] + step / np.linalg.norm(step) * rng.uniform(1.0, 1.6)
        if np.min(np.linalg.norm(np.array(pos) - trial, axis=1)) >= 0.95:
            pos.append(trial)
    return z, np.array(pos)


def make_batch(rng, sizes, dtype=torch.float64):
    mols = [random_molecule(rng, n) for n in sizes]
    return Batch.from_arrays([m[0] for m in mols], [m[1] for m in mols], dtype=dtype)


def make_potential(name, seed=0, dtype=torch.float64):
    """A small model with every parameter perturbed (no zero biases hiding a bug)."""
    torch.manual_seed(seed)
    backbone = build_backbone(name, **vars(SMALL[name]))
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return Potential(backbone).to(dtype)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def permuted(batch, perm, positions):
    return Batch(positions[perm], batch.atomic_numbers[perm], batch.system_idx[perm],
                 batch.n_systems)


# -- radius graph
def test_radius_graph_matches_brute_force():
    rng = np.random.default_rng(1)
    sizes = [1, 2, 9, 17, 30]
    batch = make_batch(rng, sizes)
    # A copy of the 30-atom molecule on exactly the same coordinates: no edges may cross.
    last = batch.system_idx == 4
    pos = torch.cat([batch.positions, batch.positions[last]])
    z = torch.cat([batch.atomic_numbers, batch.atomic_numbers[last]])
    sys_idx = torch.cat([batch.system_idx, torch.full((30,), 5)])
    perm = torch.as_tensor(rng.permutation(len(z)))  # molecules need not be contiguous
    pos, z, sys_idx = pos[perm], z[perm], sys_idx[perm]
    cutoff = 3.1

    p = pos.numpy()
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    same = sys_idx.numpy()[:, None] == sys_idx.numpy()[None]
    expected = {(j, i) for i, j in zip(*np.nonzero(same & (d < cutoff)), strict=True) if i != j}
    assert len(expected) > 100

    for max_pairs in (1 << 24, 37):  # one chunk, and many (a row per chunk at times)
        graph = radius_graph(pos, sys_idx, cutoff, max_pairs=max_pairs)
        src, dst = graph.edge_index.numpy()
        assert set(zip(src.tolist(), dst.tolist(), strict=True)) == expected
        assert len(src) == len(expected) == 2 * graph.n_pairs
        n = graph.n_pairs
        np.testing.assert_array_equal(graph.edge_index[:, n:], graph.edge_index[:, :n].flip(0))
        np.testing.assert_allclose(graph.distances.numpy(), d[src, dst], rtol=1e-12)
        unit = (p[src] - p[dst]) / d[src, dst][:, None]
        np.testing.assert_allclose(graph.unit_vectors.numpy(), unit, rtol=1e-10, atol=1e-12)


def test_neighbor_pairs_empty_and_isolated():
    assert neighbor_pairs(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 5.0).shape == (2, 0)
    far = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]])
    assert neighbor_pairs(far, torch.zeros(2, dtype=torch.long), 5.0).shape == (2, 0)


# -- the contract, every model
@pytest.mark.parametrize("name", sorted(MODELS))
def test_energy_invariant_forces_equivariant(name):
    rng = np.random.default_rng(2)
    potential = make_potential(name)
    batch = make_batch(rng, [7, 12, 5])
    energy, forces = energy_and_forces(potential, batch)
    assert torch.all(forces.abs().sum(dim=1) > 1e-6)  # not trivially zero

    rot = torch.as_tensor(random_rotation(rng))
    shift = torch.as_tensor(rng.normal(scale=5.0, size=(batch.n_systems, 3)))
    moved = batch.positions @ rot.T + shift[batch.system_idx]
    perm = torch.as_tensor(rng.permutation(batch.n_atoms))
    energy2, forces2 = energy_and_forces(potential, permuted(batch, perm, moved))

    torch.testing.assert_close(energy2, energy, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(forces2, (forces @ rot.T)[perm], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forces_equal_finite_differences(name):
    rng = np.random.default_rng(3)
    potential = make_potential(name)
    batch = make_batch(rng, [6, 4])
    _, forces = energy_and_forces(potential, batch)
    h = 1e-5
    numeric = torch.zeros_like(forces)
    with torch.no_grad():
        for a in range(batch.n_atoms):
            for k in range(3):
                plus, minus = batch.positions.clone(), batch.positions.clone()
                plus[a, k] += h
                minus[a, k] -= h
                e_plus = potential(Batch(plus, batch.atomic_numbers, batch.system_idx, 2)).sum()
                e_minus = potential(Batch(minus, batch.atomic_numbers, batch.system_idx, 2)).sum()
                numeric[a, k] = -(e_plus - e_minus) / (2 * h)
    assert forces.abs().max() > 1e-2
    torch.testing.assert_close(forces, numeric, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_molecule_alone_equals_molecule_in_batch(name, dtype, tol):
    rng = np.random.default_rng(4)
    potential = make_potential(name, dtype=dtype)
    batch = make_batch(rng, [8, 14, 3, 14], dtype=dtype)
    # Molecule 3 is a copy of molecule 1 on the same coordinates.
    one = batch.system_idx == 1
    three = batch.system_idx == 3
    batch.positions[three] = batch.positions[one]
    batch.atomic_numbers[three] = batch.atomic_numbers[one]
    energy, forces = energy_and_forces(potential, batch)
    alone = Batch(batch.positions[one], batch.atomic_numbers[one],
                  torch.zeros(int(one.sum()), dtype=torch.long), 1)
    energy1, forces1 = energy_and_forces(potential, alone)
    assert forces.dtype == dtype and energy.dtype == torch.float64
    torch.testing.assert_close(energy[1:2], energy1, rtol=tol, atol=tol)
    torch.testing.assert_close(energy[3:4], energy1, rtol=tol, atol=tol)
    torch.testing.assert_close(forces[one], forces1, rtol=tol, atol=tol)
    torch.testing.assert_close(forces[three], forces1, rtol=tol, atol=tol)


# -- independent dense implementations of the two layouts
def _dense_geometry(batch, cutoff):
    pos = batch.positions
    diff = pos[None, :, :] - pos[:, None, :]  # [i, j] = pos_j - pos_i: source j, target i
    d = diff.norm(dim=-1)
    n = len(pos)
    mask = (batch.system_idx[:, None] == batch.system_idx[None, :]) & (d < cutoff)
    mask &= ~torch.eye(n, dtype=torch.bool)
    d_safe = torch.where(mask, d, torch.ones_like(d))
    return d_safe, diff / d_safe[..., None], mask.to(pos.dtype)


def _linear(sd, prefix, x):
    return torch.nn.functional.linear(x, sd[prefix + ".weight"], sd.get(prefix + ".bias"))


def reference_painn(model, batch):
    """The OC20 PaiNN equations, written densely from the state dict (no shared code)."""
    sd, cfg = model.state_dict(), model.config
    h = cfg.hidden_channels
    d, r, mask = _dense_geometry(batch, cfg.cutoff)
    xs = d / cfg.cutoff
    p = cfg.envelope_exponent
    env = 1 - (p + 1) * (p + 2) / 2 * xs**p + p * (p + 2) * xs ** (p + 1) \
        - p * (p + 1) / 2 * xs ** (p + 2)
    centres = torch.linspace(0, 1, cfg.num_rbf, dtype=d.dtype)
    width = 1.0 / (cfg.num_rbf - 1)
    rbf = env[..., None] * torch.exp(-0.5 * ((xs[..., None] - centres) / width) ** 2)

    def act(t):
        return torch.nn.functional.silu(t) / 0.6

    x = sd["atom_emb.embeddings.weight"][batch.atomic_numbers - 1]
    vec = torch.zeros(len(x), 3, h, dtype=x.dtype)
    for i in range(cfg.num_layers):
        m = f"message_layers.{i}"
        xn = torch.nn.functional.layer_norm(x, (h,), sd[m + ".x_layernorm.weight"],
                                            sd[m + ".x_layernorm.bias"])
        xh = _linear(sd, m + ".x_proj.2", act(_linear(sd, m + ".x_proj.0", xn)))
        per_edge = xh[None] * _linear(sd, m + ".rbf_proj", rbf) * mask[..., None]
        a, b, c = per_edge.split(h, dim=-1)  # [i, j, h]
        dx = a.sum(1)
        dvec = (vec[None] * b[:, :, None, :] / math.sqrt(3) + c[:, :, None, :] * r[..., None])
        x = (x + dx) / math.sqrt(2)
        vec = vec + dvec.sum(1) / math.sqrt(h)
        u = f"update_layers.{i}"
        v1, v2 = _linear(sd, u + ".vec_proj", vec).split(h, dim=-1)
        inner = (v1 * v2).sum(1) / math.sqrt(h)
        norm = torch.sqrt((v2**2).sum(1) + 1e-8)
        hid = act(_linear(sd, u + ".xvec_proj.0", torch.cat([x, norm], -1)))
        s1, s2, s3 = _linear(sd, u + ".xvec_proj.2", hid).split(h, dim=-1)
        x = x + (s1 + s2 * inner) / math.sqrt(2)
        vec = vec + s3[:, None, :] * v1
        scale = sd[f"upd_out_scalar_scale_{i}.scale_factor"]
        x = x * scale if scale != 0 else x
    return _linear(sd, "out_energy.2", act(_linear(sd, "out_energy.0", x)))[:, 0]


def reference_schnet(model, batch):
    """SchNet's continuous-filter convolutions, written densely from the state dict."""
    sd, cfg = model.state_dict(), model.config
    d, _, mask = _dense_geometry(batch, cfg.cutoff)
    centres = torch.linspace(0, cfg.cutoff, cfg.num_gaussians, dtype=d.dtype)
    g = torch.exp(-0.5 * ((d[..., None] - centres) / (centres[1] - centres[0])) ** 2)
    cut = 0.5 * (torch.cos(d * math.pi / cfg.cutoff) + 1) * mask

    def ssp(t):
        return torch.nn.functional.softplus(t) - math.log(2)

    x = sd["embedding.weight"][batch.atomic_numbers]
    for i in range(cfg.num_interactions):
        b = f"interactions.{i}"
        w = _linear(sd, b + ".mlp.2", ssp(_linear(sd, b + ".mlp.0", g))) * cut[..., None]
        conv = (_linear(sd, b + ".conv.lin1", x)[None] * w).sum(1)
        x = x + _linear(sd, b + ".lin", ssp(_linear(sd, b + ".conv.lin2", conv)))
    return _linear(sd, "lin2", ssp(_linear(sd, "lin1", x)))[:, 0]


@pytest.mark.parametrize("name", ["painn", "schnet"])  # MACE: against mace's own data path
def test_matches_dense_reference_implementation(name):
    rng = np.random.default_rng(5)
    potential = make_potential(name)
    backbone = potential.backbone
    if name == "painn":  # exercise fitted scale factors too
        backbone.upd_out_scalar_scale_1.scale_factor.fill_(0.7)
    batch = make_batch(rng, [9, 5, 11])
    reference = {"painn": reference_painn, "schnet": reference_schnet}[name]
    with torch.no_grad():
        ours = backbone(batch.positions, batch.atomic_numbers, batch.system_idx)
        theirs = reference(backbone, batch)
    assert theirs.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_painn_has_the_oc20_layout_at_paper_size():
    model = PaiNN()  # hidden 128, 4 layers, 128 RBF, 4.5 Å
    sd = model.state_dict()
    h, r, e = 128, 128, 83
    shapes = {"atom_emb.embeddings.weight": (e, h), "out_energy.0.weight": (h // 2, h),
              "out_energy.2.weight": (1, h // 2), "out_energy.2.bias": (1,)}
    for i in range(4):
        m, u = f"message_layers.{i}.", f"update_layers.{i}."
        shapes |= {m + "x_proj.0.weight": (h, h), m + "x_proj.2.weight": (3 * h, h),
                   m + "rbf_proj.weight": (3 * h, r), m + "rbf_proj.bias": (3 * h,),
                   m + "x_layernorm.weight": (h,), u + "vec_proj.weight": (2 * h, h),
                   u + "xvec_proj.0.weight": (h, 2 * h), u + "xvec_proj.2.weight": (3 * h, h),
                   f"upd_out_scalar_scale_{i}.scale_factor": ()}
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    per_message = (h * h + h) + (h * 3 * h + 3 * h) + (r * 3 * h + 3 * h) + 2 * h
    per_update = 2 * h * h + (2 * h * h + h) + (h * 3 * h + 3 * h)
    expected = e * h + 4 * (per_message + per_update) + (h * h // 2 + h // 2) + (h // 2 + 1)
    assert sum(p.numel() for p in model.parameters()) == expected


# -- potential, references, precision
def test_fit_atom_refs_recovers_known_references():
    rng = np.random.default_rng(6)
    refs = np.zeros(119)
    refs[[1, 6, 7, 8, 9, 16]] = [-13.6, -1029.8, -1485.3, -2043.9, -2715.6, -10831.2]
    molecules = [rng.choice([1, 6, 7, 8, 9, 16], size=rng.integers(3, 30),
                            p=[0.45, 0.3, 0.08, 0.1, 0.04, 0.03]) for _ in range(300)]
    energies = [refs[z].sum() + rng.normal(scale=0.01) for z in molecules]
    energies[7] = np.nan  # skipped, not fitted
    fitted = fit_atom_refs(molecules, energies)
    np.testing.assert_allclose(fitted, refs, atol=0.01)
    assert fitted[2] == 0.0 and fitted[17] == 0.0


def test_potential_adds_float64_references():
    rng = np.random.default_rng(7)
    refs = np.zeros(119)
    refs[[1, 6, 7, 8]] = [-13.61, -1029.87, -1485.31, -2043.93]
    torch.manual_seed(0)
    potential = Potential(build_backbone("schnet", **vars(SMALL["schnet"])), refs)
    batch = make_batch(rng, [25, 31], dtype=torch.float32)
    energy, _ = energy_and_forces(potential, batch)
    assert potential.atom_refs.dtype == torch.float64
    with torch.no_grad():
        atomic = potential.atomic_energies(batch).double()
    z, idx = batch.atomic_numbers.numpy(), batch.system_idx.numpy()
    expected = [atomic.numpy()[idx == k].sum() + refs[z[idx == k]].sum() for k in range(2)]
    assert abs(expected[0]) > 1e4
    np.testing.assert_allclose(energy.numpy(), expected, rtol=0, atol=1e-9)
    potential.double().float().to("cpu")
    assert potential.atom_refs.dtype == torch.float64
    np.testing.assert_array_equal(potential.atom_refs.numpy(), refs)


def test_precision_on_request():
    rng = np.random.default_rng(8)
    torch.manual_seed(0)  # default initialisation: forces of a realistic size (~10 eV/Å)
    potential = Potential(PaiNN(SMALL["painn"]))
    batch32 = make_batch(rng, [10, 6], dtype=torch.float32)
    e32, f32 = energy_and_forces(potential, batch32)
    e64, f64 = energy_and_forces(potential.double(), batch32.to(dtype=torch.float64))
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(e32, e64, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_cuda_matches_cpu(name):
    rng = np.random.default_rng(9)
    potential = make_potential(name)
    batch = make_batch(rng, [12, 7, 20])
    e_cpu, f_cpu = energy_and_forces(potential, batch)
    e_gpu, f_gpu = energy_and_forces(potential.to("cuda"), batch.to("cuda"))
    torch.testing.assert_close(e_gpu.cpu(), e_cpu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, rtol=1e-10, atol=1e-10)


def test_unknown_model_and_element_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'nequip'"):
        build_backbone("nequip")
    batch = Batch.from_arrays([np.array([6, 92])], [np.array([[0.0, 0, 0], [1.5, 0, 0]])])
    with pytest.raises(ValueError, match=r"\[92\] outside"):
        energy_and_forces(Potential(PaiNN(SMALL["painn"])), batch)


# -- batches from the real inputs
def test_batch_from_store_atoms_and_arrays_agree(tmp_path):
    rng = np.random.default_rng(10)
    mols = [random_molecule(rng, n) for n in (5, 8)]
    trajectories = [
        Trajectory(z, pos[None] + rng.normal(scale=0.05, size=(3,) + pos.shape),
                   energy=rng.normal(-2000.0, 5.0, 3), forces=rng.normal(size=(3,) + pos.shape),
                   stages="xtb", charge=k)
        for k, (z, pos) in enumerate(mols)
    ]
    with TrajectoryWriter(tmp_path / "store") as writer:
        writer.extend(trajectories)
    store = TrajectoryStore(tmp_path / "store")
    picks = [(1, 2), (0, 0), (1, 0)]  # (trajectory, snapshot)
    indices = [int(store.trajectory_snapshots(t)[s]) for t, s in picks]
    from_store = Batch.from_store(store.read(indices), dtype=torch.float64)

    atoms = []
    for t, s in picks:
        traj = trajectories[t]
        a = Atoms(numbers=traj.atomic_numbers, positions=traj.positions[s], info={"charge": t})
        a.calc = SinglePointCalculator(a, energy=traj.energy[s], forces=traj.forces[s])
        atoms.append(a)
    from_atoms = Batch.from_atoms(atoms, dtype=torch.float64)

    assert from_store.n_systems == from_atoms.n_systems == 3
    torch.testing.assert_close(from_store.positions, from_atoms.positions, atol=1e-6, rtol=0)
    for field in ("atomic_numbers", "system_idx", "charge"):
        torch.testing.assert_close(getattr(from_store, field), getattr(from_atoms, field))
    torch.testing.assert_close(from_store.energy, from_atoms.energy, rtol=0, atol=0)
    assert from_store.energy.dtype == torch.float64
    torch.testing.assert_close(from_store.forces, from_atoms.forces, atol=1e-6, rtol=0)
    assert from_store.system_idx.tolist() == [0] * 8 + [1] * 5 + [2] * 8
    assert from_store.to(dtype=torch.float32).positions.dtype == torch.float32


# -- learning
def morse_energy(positions, system_idx, n_systems, d_e=0.5, a=1.8, r0=1.3):
    """Sum of Morse pair terms within each molecule, eV (positions Å)."""
    i, j = torch.triu_indices(len(positions), len(positions), offset=1)
    same = system_idx[i] == system_idx[j]
    i, j = i[same], j[same]
    r = (positions[i] - positions[j]).norm(dim=-1)
    pair = d_e * (1 - torch.exp(-a * (r - r0))) ** 2 - d_e
    return torch.zeros(n_systems, dtype=positions.dtype).index_add(0, system_idx[i], pair)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfits_a_tiny_dataset(name):
    rng = np.random.default_rng(11)
    torch.manual_seed(0)
    base = [random_molecule(rng, n) for n in (5, 7, 9, 6)]
    mols = [(z, pos + rng.normal(scale=0.08, size=pos.shape)) for z, pos in base for _ in range(3)]
    batch = Batch.from_arrays([m[0] for m in mols], [m[1] for m in mols])
    pos = batch.positions.double().requires_grad_(True)
    energy = morse_energy(pos, batch.system_idx, batch.n_systems)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    labels_e, labels_f = energy.detach(), -grad.float()

    refs = fit_atom_refs([m[0] for m in mols], labels_e.numpy())
    config = {"painn": PaiNNConfig(hidden_channels=32, num_layers=2, num_rbf=16, cutoff=4.0),
              "painn_foundation": FoundationPaiNNConfig(hidden_channels=32, num_layers=2,
                                                        num_rbf=16, cutoff=4.0),
              "schnet": SchNetConfig(hidden_channels=32, num_filters=32, num_interactions=2,
                                     num_gaussians=16, cutoff=4.0),
              "mace": MACEConfig(r_max=4.0, hidden_irreps="8x0e+8x1o", max_ell=1,
                                 correlation=2, num_bessel=8, radial_mlp=(16, 16),
                                 elements=(1, 6, 7, 8))}[name]
    potential = Potential(MODELS[name](config), refs)
    optimizer = torch.optim.Adam(potential.parameters(), lr=3e-3)
    n_atoms = batch.atoms_per_system().double()

    def loss_fn():
        e, f = energy_and_forces(potential, batch, create_graph=True)
        return ((e - labels_e) / n_atoms).square().mean() + (f - labels_f).square().mean()

    # What a model that learned nothing but the references would score (zero forces).
    with torch.no_grad():
        e_refs = potential.reference_energy(batch)
    trivial = float(((e_refs - labels_e) / n_atoms).square().mean() + labels_f.square().mean())
    first = float(loss_fn().detach())
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
    last = float(loss_fn().detach())
    # Seeded data and init: deterministic. Over torch seeds 0-5, first / last and
    # trivial / last: painn 7474-25718 and 4244-10251, painn_foundation 4559-7957 and
    # 4260-8405, schnet 1315-2578 and 1174-2152, mace 18-25 and 18-25 (all > 10).
    assert last < first / 10 and last < trivial / 10, (first, trivial, last)


def _page_faults_of_big_blocks(n=10):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = torch.ones(16 * 2**20)  # 64 MB, above glibc's 32 MB mmap threshold
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start


def test_keep_freed_memory_stops_page_faults_on_reuse():
    """Process-wide and one-way: it leaves this test process keeping freed memory."""
    before = _page_faults_of_big_blocks()
    assert keep_freed_memory()
    _page_faults_of_big_blocks(1)  # the first use grows the heap once
    after = _page_faults_of_big_blocks()
    if before > 10 * 15_000:  # ~16k 4-KiB pages per block, every time, unless already set
        # Mostly none after; on this VM a few blocks are sometimes faulted in again.
        assert after < before / 2, (before, after)
    assert after < 10 * 16_384 / 2, (before, after)
