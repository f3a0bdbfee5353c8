"""Input geometries for geometry fine-tuning (paper §2.4) and coordinate denoising.

Mixed conformer denoising: for every training molecule, with probability ``p_ground_truth``
the ground-truth geometry plus isotropic Gaussian noise (``noise_std`` Å per coordinate),
otherwise a frame drawn uniformly from its MLIP relaxation trajectory (the starting
geometry, intermediate steps and the relaxed end point alike). A molecule without a
stored trajectory falls back to its MLIP-relaxed geometry, and without that to the noisy
ground truth. The displacement target is ``ground truth - input`` for every choice.

The paper's released code flips one coin per *batch* and, for the noisy ground truth,
uses the noise itself (input - ground truth) as the target while the relaxed input gets
ground truth - input; here each *molecule* gets its own coin and the target always
points from the input to the ground truth, as Eq. 9 and the text describe.

All draws come from the ``numpy.random.Generator`` passed in, so a seeded generator per
batch makes every epoch reproducible (and a resumed run identical).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from force2geo.finetune.dataset import PropertyDataset

# What each molecule's input was: index into SOURCES.
SOURCES = ("noisy_ground_truth", "trajectory_frame", "mlip")


def noisy(positions: np.ndarray, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """``positions [n_atoms, 3]`` Å plus N(0, noise_std^2) noise on every coordinate."""
    return positions + rng.normal(0.0, noise_std, size=positions.shape)


def mixed_inputs(dataset: PropertyDataset, indices: Sequence[int], rng: np.random.Generator,
                 noise_std: float, p_ground_truth: float = 0.5
                 ) -> tuple[list[np.ndarray], np.ndarray]:
    """Input positions (one ``[n_atoms_i, 3]`` Å array per molecule, in order) and what
    each is (``[len(indices)]`` int codes into :data:`SOURCES`).

    Every molecule needs a ground-truth geometry. One uniform draw per molecule decides;
    a trajectory frame then costs one more integer draw, a noisy ground truth one normal
    draw per coordinate.
    """
    has_mlip = dataset.has("mlip")
    positions, sources = [], np.zeros(len(indices), dtype=np.int64)
    for k, i in enumerate(np.asarray(indices, dtype=np.int64)):
        ground_truth = dataset.positions(int(i), "ground_truth")
        coin = rng.random()
        frames = dataset.trajectory(int(i))
        if frames is None and has_mlip[i]:
            frames = dataset.positions(int(i), "mlip")[None]
            sources[k] = SOURCES.index("mlip")
        else:
            sources[k] = SOURCES.index("trajectory_frame")
        if frames is None or coin < p_ground_truth:
            positions.append(noisy(ground_truth, rng, noise_std))
            sources[k] = SOURCES.index("noisy_ground_truth")
        else:
            positions.append(frames[rng.integers(len(frames))])
    return positions, sources
