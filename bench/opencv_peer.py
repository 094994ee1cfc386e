#!/usr/bin/python3
"""OpenCV's DNN module on the same ONNX file and input as bench_nn, for comparison.

Runs with Debian's /usr/bin/python3 and python3-opencv (4.6), one thread
(cv2.setNumThreads(1)), and prints min/median milliseconds in the same
"key: value" form as bench_nn. The input is either a photo (BGR, resized to
the network size, 0..255, NCHW float32: the convention of the golden data in
../shared/golden/yunet) or the same deterministic pattern bench_nn uses.
--dump-input FILE writes that tensor as raw little-endian float32 so bench_nn
--input FILE runs on exactly the same numbers.
"""
import argparse
import statistics
import sys
import time

import cv2
import numpy as np


def pattern(n):
    # Same as bench_nn.c fill_pattern: ((i * 2654435761) mod 2^32) >> 24.
    i = np.arange(n, dtype=np.uint64)
    return (((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(24)).astype(
        np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--size", default="640x640", help="network input WxH (default 640x640)")
    ap.add_argument("--image", help="photo to feed (default: the deterministic pattern)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dump-input", metavar="FILE", help="write the input tensor (float32)")
    a = ap.parse_args()

    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        sys.exit("opencv_peer: --size must look like 640x640")
    if a.image:
        img = cv2.imread(a.image, cv2.IMREAD_COLOR)
        if img is None:
            sys.exit("opencv_peer: cannot read image %s" % a.image)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        blob = img.astype(np.float32).transpose(2, 0, 1)[np.newaxis].copy()
    else:
        blob = pattern(3 * h * w).reshape(1, 3, h, w)
    if a.dump_input:
        blob.astype("<f4").tofile(a.dump_input)

    cv2.setNumThreads(a.threads)
    net = cv2.dnn.readNetFromONNX(a.model)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = net.getUnconnectedOutLayersNames()
    net.setInput(blob)
    for _ in range(a.warmup):
        outs = net.forward(names)
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        net.setInput(blob)
        outs = net.forward(names)
        times.append((time.perf_counter() - t) * 1000.0)
    checksum = sum(float(np.abs(o).sum()) for o in outs)
    print("model: %s" % a.model)
    print("engine: OpenCV %s dnn" % cv2.__version__)
    print("threads: %d" % cv2.getNumThreads())
    print("runs: %d (+%d warm-up)" % (a.runs, a.warmup))
    print("min_ms: %.3f" % min(times))
    print("median_ms: %.3f" % statistics.median(times))
    print("checksum: %.6g" % checksum)


if __name__ == "__main__":
    main()
