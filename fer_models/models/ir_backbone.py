"""insightface's IR networks as backbones of the ResNet-based families (``--option backbone=ir50``;
also ``ir18``, ``ir34``, ``ir100``).

The face backbones the field's strong FER results start from (POSTER++ and its kin fine-tune an
IR-50 trained for face recognition on MS-Celeb-1M) are "improved residual" networks: each block
is BN, 3x3 convolution, BN, PReLU, 3x3 convolution (with the block's stride), BN, plus the
shortcut (a 1x1 convolution and BN where the shape changes). The layout and the parameter names
here are those of insightface's ``arcface_torch`` (``backbones/iresnet.py``: ``conv1``, ``bn1``,
``prelu``, ``layer1`` .. ``layer4``), so its published checkpoints load by name. Stage i's map is
``(B, 64 * 2**(i-1), S / 2**i, S / 2**i)``; a 112 x 112 face, the ArcFace crop these weights were
trained on (``fer-preprocess --align arcface --size 112``), ends as 7 x 7.

The face-recognition head of those checkpoints (``bn2``, ``fc``, ``features``: a 512-d identity
embedding of the flattened 7 x 7 map) is not built: expression is classified from the pooled last
stage, as for the other backbones. Inputs are normalised as insightface trains, ``(x - 0.5) / 0.5``.

Weights come from a local file only (``backbone_weights=PATH``, a torch or safetensors state
dict), loaded strictly: every tensor of the network must be in the file with its shape, and the
file may hold nothing else but the identity head. A grey store sums the RGB filters of the first
convolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from fer_models.models.input_normalisation import INSIGHTFACE_MEAN, INSIGHTFACE_STD, InputNormalisation
from fer_models.models.resnet import PretrainedStages
from fer_models.models.weight_files import check_inflation
from pipeline.errors import ConfigError

IR_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "ir18": (2, 2, 2, 2),
    "ir34": (3, 4, 6, 3),
    "ir50": (3, 4, 14, 3),
    "ir100": (3, 13, 30, 3),
}
# The face-recognition head of insightface's checkpoints, which the FER backbone does not build.
IDENTITY_HEAD = ("bn2.", "fc.", "features.")


class IBasicBlock(nn.Module):
    """insightface's improved residual block: ``(B, C_in, h, w) -> (B, C, h / stride, w / stride)``."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNetBody(nn.Module):
    """The stem and stages 1..``until`` of an IR network, under insightface's parameter names."""

    def __init__(self, depths: Sequence[int], in_channels: int, until: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        previous = 64
        for i, blocks in enumerate(depths[:until]):
            channels = 64 * 2**i
            stage = nn.Sequential(
                IBasicBlock(previous, channels, 2), *(IBasicBlock(channels, channels, 1) for _ in range(blocks - 1))
            )
            self.add_module(f"layer{i + 1}", stage)
            previous = channels
        self.until = until
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, outputs = self.prelu(self.bn1(self.conv1(x))), []
        for i in range(self.until):
            x = getattr(self, f"layer{i + 1}")(x)
            outputs.append(x)
        return outputs


class IRStages(PretrainedStages):
    """An IR network as stages 1..``until``, with a linear head on the pooled last stage: the
    interface of :class:`~fer_models.models.timm_backbone.TimmStages`.

    ``(B, C, S, S) float32`` in [0, 1] ``-> logits (B, K)`` and ``features (B, D)``.

    Args:
        name: ``ir18``, ``ir34``, ``ir50`` or ``ir100``.
        in_channels, num_classes: the store's C and K; ``num_classes=0``: no head.
        weights: a local insightface state dict, or "" (random initialisation).
        until: the deepest stage built (1-4).
    """

    def __init__(self, name: str, in_channels: int, num_classes: int, weights: str = "", until: int = 4):
        super().__init__()
        if name not in IR_DEPTHS:
            raise ConfigError(f"unknown IR backbone {name!r}; choose one of {', '.join(IR_DEPTHS)}")
        self.normalise = InputNormalisation(INSIGHTFACE_MEAN, INSIGHTFACE_STD, in_channels)
        self.body = IResNetBody(IR_DEPTHS[name], in_channels, until)
        self.channels: tuple[int, ...] = tuple(64 * 2**i for i in range(until))
        self.reductions: tuple[int, ...] = tuple(2 ** (i + 1) for i in range(until))
        self.head = nn.Linear(self.channels[-1], num_classes) if num_classes else None
        if weights:
            load_insightface_weights(self.body, weights, name)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a torch file (a state dict, or a checkpoint holding
    one under ``state_dict`` or ``model``), without running pickled code.

    Raises:
        ConfigError: not a file, not readable as weights, or not a dict of tensors.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"backbone_weights {path!r} is not a file")
    check_inflation(path, f"backbone_weights {path}")
    try:
        state: object
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  # safetensors and torch.load raise many kinds
        raise ConfigError(
            f"backbone_weights {path}: cannot read it as weights ({type(error).__name__}: {error})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ConfigError(f"backbone_weights {path}: not a state dict (a mapping of names to tensors)")
    return {str(key): value for key, value in state.items()}


def load_insightface_weights(body: IResNetBody, path: str, name: str) -> None:
    """Load an insightface checkpoint into ``body``, strictly.

    Raises:
        ConfigError: a tensor of the network missing from the file or of another shape, or a
            tensor in the file that is neither the network's nor the identity head's (nor of a
            stage beyond the last one built), naming them.
    """
    file_state = read_state_dict(path)
    expected = body.state_dict()
    not_built = IDENTITY_HEAD + tuple(f"layer{stage}." for stage in range(body.until + 1, 5))
    unexpected = [key for key in file_state if key not in expected and not key.startswith(not_built)]
    missing = [key for key in expected if key not in file_state]
    if missing or unexpected:
        what = f"{len(missing)} of its tensors are missing ({', '.join(missing[:3])})" if missing else ""
        extra = f"{len(unexpected)} are not its own ({', '.join(unexpected[:3])})" if unexpected else ""
        raise ConfigError(
            f"backbone_weights {path} does not fit insightface's {name}: {'; '.join(filter(None, (what, extra)))}; "
            f"give an arcface_torch {name} state dict (iresnet{name.removeprefix('ir')})"
        )
    loaded = {}
    for key, target in expected.items():
        tensor = file_state[key]
        if key == "conv1.weight" and tensor.shape[1] == 3 and target.shape[1] == 1:
            tensor = tensor.sum(1, keepdim=True)  # a grey store: the RGB filters summed
        if tensor.shape != target.shape:
            raise ConfigError(
                f"backbone_weights {path}: {key} is {tuple(tensor.shape)}, {name} needs {tuple(target.shape)}"
            )
        loaded[key] = tensor
    body.load_state_dict(loaded, strict=True)
