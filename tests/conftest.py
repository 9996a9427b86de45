import pytest
import torch

from geomformer_md.model import GeoMFormer, GeoMFormerConfig
from geomformer_md.model.radial import EquRMSNorm, EquWhitenNorm

# One thread: tests use tiny models, and two OpenMP threads on a busy 2-core machine
# spin against each other (measured 30x slower per call).
torch.set_num_threads(1)

SPECIES = (1, 6, 7, 8, 29, 78)


def make_model(dtype: str = "float64", seed: int = 0, **overrides) -> GeoMFormer:
    """A small random model whose weights are scaled up so every term matters."""
    torch.manual_seed(seed)
    cfg = dict(species=SPECIES, cutoff=4.0, d_model=16, n_heads=2, n_layers=2, n_rbf=8, dtype=dtype)
    cfg.update(overrides)
    model = GeoMFormer(GeoMFormerConfig(**cfg))
    with torch.no_grad():
        model.self_rbf.normal_()
        model.e0.copy_(torch.linspace(-3.0, -1.0, len(cfg["species"])))
        # The soft equivariant norm (eps 1) passes small vectors with gain 1; 10 (a third of the
        # 1/sqrt(1e-3) of the old eps) makes the equivariant terms matter in the forces.
        for m in model.modules():
            if isinstance(m, (EquRMSNorm, EquWhitenNorm)):
                m.gamma.fill_(10.0)
    return model.eval()


@pytest.fixture(scope="session")
def model64():
    return make_model("float64")
