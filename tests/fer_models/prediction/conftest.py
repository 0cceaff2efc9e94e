import pytest

from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train
from tests.support.stores import SMALL_FAMILIES


@pytest.fixture(scope="session")
def runs(tmp_path_factory, fer_store):
    """One 1-epoch run of every family on the FER-2013 test store, in ``<root>/<model>``."""
    root = tmp_path_factory.mktemp("prediction-runs")
    for model, options in SMALL_FAMILIES.items():
        config = TrainConfig(store=str(fer_store), model=model, options=options, epochs=1, batch_size=16, seed=3)
        train(config, root / model)
    return root
