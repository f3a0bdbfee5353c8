"""Property prediction from geometries (paper §2.4, §4.3, §4.4, A.5).

* :mod:`.dataset` — property datasets: per molecule a ground-truth geometry, alternative
  input geometries (RDKit, early-stage, MLIP-relaxed with its trajectory) and targets (eV).
* :mod:`.model` — :class:`~.model.PropertyModel`: a backbone (PaiNN, SchNet, GIN-virtual)
  with a property head and an equivariant displacement head; Force2Prop from an MLIP.
* :mod:`.train` — :func:`~.train.fit_property`: property training, Force2Prop fine-tuning
  and geometry fine-tuning.
* :mod:`.denoise` — coordinate-denoising pre-training (Zaidi et al. 2022), the paper's
  alternative pre-training (A.5.2).
"""

from .build import from_store as from_store
from .build import stage_geometries as stage_geometries
from .checkpoint import load_property_model as load_property_model
from .config import PropertyTrainConfig as PropertyTrainConfig
from .conformers import add_rdkit_conformers as add_rdkit_conformers
from .conformers import ordered_conformer as ordered_conformer
from .dataset import GEOMETRIES as GEOMETRIES
from .dataset import Graph2D as Graph2D
from .dataset import PropertyBatch as PropertyBatch
from .dataset import PropertyDataset as PropertyDataset
from .denoise import DenoiseConfig as DenoiseConfig
from .denoise import pretrain_denoising as pretrain_denoising
from .model import PropertyModel as PropertyModel
from .relaxation import relax_geometries as relax_geometries
from .splits import leakage_mask as leakage_mask
from .splits import split_dataset as split_dataset
from .train import evaluate as evaluate
from .train import fit_property as fit_property
from .train import predict as predict
