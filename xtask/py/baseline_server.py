"""The baseline for `cargo xtask bench sidecar`: features.v1 served the way a typical team would
write it in Python -- grpcio with a thread pool, Pillow to decode and resize, NumPy to normalise
and score quality, one onnxruntime session, one image per inference call.

Same model, same pre-processing (shorter side to 256 with bilinear, centre crop 224, ImageNet
mean/std, RGB) and same answer (1280-d features, blur, brightness, class scores) as the sidecar.

    python baseline_server.py --model var/models/orientation/1/model.onnx --port 50061 --proto proto
"""

import argparse
import io
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
LABELS = ["0", "90", "180", "270"]


def load_stubs(proto_root: Path):
    """Generates the features.v1 Python stubs with grpc_tools into a temporary directory."""
    from grpc_tools import protoc
    import grpc_tools

    out = Path(tempfile.mkdtemp(prefix="switchyard-baseline-"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto_root / "features/v1/features.proto"),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, str(out))
    from features.v1 import features_pb2, features_pb2_grpc

    return features_pb2, features_pb2_grpc


def preprocess(data: bytes):
    image = Image.open(io.BytesIO(data)).convert("RGB")
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    laplacian = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    quality = {"blur": float(laplacian.var()), "brightness": float(gray.mean() / 255.0)}

    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[np.newaxis].astype(np.float32), quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--proto", type=Path, required=True, help="the repository's proto/ directory")
    parser.add_argument("--port", type=int, default=50061, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    pb, pb_grpc = load_stubs(args.proto)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    class Service(pb_grpc.FeatureExtractionServiceServicer):
        def ExtractRealtime(self, request, context):
            try:
                x, quality = preprocess(request.image_data)
            except Exception as e:  # what a typical service does with a bad image
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot read image: {e}")
            classes, features = session.run(None, {input_name: x})
            scores = dict(quality)
            for label, score in zip(LABELS, classes[0]):
                scores[f"class/{label}"] = float(score)
            response = pb.ExtractRealtimeResponse(
                request_id=request.request_id,
                model_version="orientation/1",
                feature_vector=features[0].tolist(),
                quality_scores=scores,
            )
            response.processed_at.FromNanoseconds(time.time_ns())
            return response

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[("grpc.max_receive_message_length", 32 << 20)],
    )
    pb_grpc.add_FeatureExtractionServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"baseline ready on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
