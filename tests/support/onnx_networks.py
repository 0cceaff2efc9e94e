"""Small saliency networks exported to ONNX here (no weights downloaded), as a user's network
reaches the pipeline."""

from __future__ import annotations

from pathlib import Path


def export_saliency_network(
    path: Path, channels: int = 3, input_size: int | None = None, out_channels: int = 1
) -> Path:
    """Export a small, fixed-seed torch saliency network to ONNX at ``path`` and return it.

    ``(B, channels, h, w) float32 0..1 -> (B, out_channels, h/2, w/2)``, a sigmoid map; h and w
    are free unless ``input_size`` fixes them. No weights are downloaded: the network is made here.
    """
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, out_channels, 5, padding=2, stride=2),
        torch.nn.Sigmoid(),
    )
    return export_onnx(network, path, channels, input_size)


def export_onnx(network, path: Path, channels: int = 3, input_size: int | None = None) -> Path:
    """Export the torch ``network`` (in eval mode) to ONNX at ``path``: one input ``image``
    ``(B, channels, h, w)``, h and w free unless ``input_size`` fixes them; its first output is
    ``saliency``."""
    import warnings

    import torch

    side = input_size or 64
    free = {} if input_size else {"image": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network.eval(),
            torch.rand(1, channels, side, side),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["saliency"],
            dynamic_axes=free,
        )
    return path


def export_dimming_network(path: Path, threshold: float) -> Path:
    """A saliency network that gives NaN on every face darker than ``threshold`` (mean of its 0..1
    input), and a finite map elsewhere: it passes a start-up check on a bright face."""
    import torch

    class Dimming(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 1, 5, padding=2)

        def forward(self, image):
            return torch.sigmoid(self.conv(image)) * torch.sqrt(image.mean() - threshold)

    return export_onnx(Dimming(), path)


def export_endless_network(path: Path) -> Path:
    """A network whose ``Loop`` never ends (no trip count, a condition always true): ``image (1,
    3, h, w) -> saliency`` only once the loop stops, which it never does."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["condition_in"], ["condition_out"]),
            helper.make_node("Identity", ["carried_in"], ["carried_out"]),
        ],
        "forever",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("condition_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("condition_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["always"], value=helper.make_tensor("always", TensorProto.BOOL, [], [True])
            ),
            helper.make_node("Loop", ["", "always", "image"], ["looped"], body=body),
            helper.make_node("ReduceMean", ["looped"], ["saliency"], axes=[1], keepdims=1),
        ],
        "endless",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def export_greedy_network(path: Path) -> Path:
    """A network that asks for a 40 GB tensor (``Expand`` to 1 x 1 x 100,000 x 100,000 float32)."""
    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 1, 100_000, 100_000])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["gray"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Constant", [], ["shape"], value=shape),
            helper.make_node("Expand", ["gray", "shape"], ["saliency"]),
        ],
        "greedy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
