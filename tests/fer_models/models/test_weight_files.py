"""Weight files whose members would inflate are refused before torch reads them."""

import subprocess
import sys
import zipfile

import pytest
import torch

from fer_models.models.registry import create_model
from fer_models.models.weight_files import check_inflation
from fer_models.training.checkpoint import load_initial_weights
from pipeline.errors import ConfigError


def test_a_file_torch_saved_loads_and_one_inflating_to_2_gib_is_refused_before_any_memory_is_spent(tmp_path):
    model = create_model("cnn", num_classes=7, in_channels=1, image_size=48)
    saved = tmp_path / "weights.pt"
    torch.save(model.state_dict(), saved)
    check_inflation(saved, "--init weights.pt")
    assert "loaded" in load_initial_weights(
        create_model("cnn", num_classes=7, in_channels=1, image_size=48), str(saved)
    )

    bomb = tmp_path / "bomb.pt"  # the same archive, its first tensor replaced by 2 GiB deflated to 2 MB
    with zipfile.ZipFile(saved) as original, zipfile.ZipFile(bomb, "w") as rewritten:
        for member in original.infolist():
            if member.filename.endswith("/data/0"):
                inflating = zipfile.ZipInfo(member.filename)
                inflating.compress_type = zipfile.ZIP_DEFLATED
                with rewritten.open(inflating, "w", force_zip64=True) as out:
                    for _ in range(32):
                        out.write(bytes(64 << 20))
            else:
                rewritten.writestr(member, original.read(member))
    assert bomb.stat().st_size < 20 << 20
    with pytest.raises(ConfigError, match=r"--init bomb.pt: its members inflate to 2,148 MB from a file of"):
        check_inflation(bomb, "--init bomb.pt")
    probe = (
        "import resource, sys\n"
        "from fer_models.models.registry import create_model\n"
        "from fer_models.training.checkpoint import load_initial_weights\n"
        "try:\n"
        "    load_initial_weights(create_model('cnn', num_classes=7, in_channels=1, image_size=48), sys.argv[1])\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, check=True)
    kind, peak_kib = result.stdout.split()
    assert kind == "ConfigError" and int(peak_kib) < 1_500_000  # torch alone would inflate 2 GiB first
