#!/usr/bin/python3
"""OpenCV's DNN module on the same ONNX file and input as bench_nn, for comparison.

Runs with Debian's /usr/bin/python3 and python3-opencv (4.6), one thread
(cv2.setNumThreads(1)), and prints min/median milliseconds in the same
"key: value" form as bench_nn. The input is either a photo (BGR, resized to
the network size, 0..255, NCHW float32: the convention of the golden data in
../shared/golden/yunet) or the same deterministic pattern bench_nn uses.
--dump-input FILE writes that tensor as raw little-endian float32 so bench_nn
--input FILE runs on exactly the same numbers.

`opencv_peer.py anonymize --model YUNET --outdir DIR PHOTO...` is the end-to-end
peer of `pixpipe anonymize` (issue 12): per photo, read it, run OpenCV's
FaceDetectorYN once with the photo scaled so its long side is 640 px, blur
every face box (GaussianBlur, sigma a fifth of the face width), write a
JPEG at quality 90; one thread. OpenCV 4.6 (Debian 12) reads YuNet 2022mar,
not 2023mar. Prints per-photo faces and milliseconds, and `total_ms`.
"""
import argparse
import os
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


def anonymize(argv):
    ap = argparse.ArgumentParser(prog="opencv_peer.py anonymize")
    ap.add_argument("--model", required=True, help="YuNet ONNX file OpenCV reads (2022mar)")
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--runs", type=int, default=3, help="passes over the photos; the best counts")
    ap.add_argument("photos", nargs="+")
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    det = cv2.FaceDetectorYN.create(a.model, "", (640, 640), a.threshold, 0.3, 5000)
    det.detect(np.zeros((640, 640, 3), np.uint8))  # warm-up: the network is set up lazily
    best = None
    for _ in range(max(1, a.runs)):
        total = one_run(det, a)
        best = total if best is None else min(best, total)
    print("total_ms: %.1f" % best)


def one_run(det, a):
    total = 0.0
    for path in a.photos:
        t = time.perf_counter()
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            sys.exit("opencv_peer: cannot read image %s" % path)
        h, w = img.shape[:2]
        k = 640.0 / max(w, h)
        small = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))),
                           interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        det.setInputSize((small.shape[1], small.shape[0]))
        _, faces = det.detect(small)
        n = 0
        for f in faces if faces is not None else []:
            x, y, fw, fh = (v / k for v in f[:4])
            x0, y0 = max(int(x), 0), max(int(y), 0)
            x1, y1 = min(int(x + fw) + 1, w), min(int(y + fh) + 1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            sigma = max(8.0, fw / 5.0)
            img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), sigma)
            n += 1
        out = os.path.join(a.outdir, os.path.splitext(os.path.basename(path))[0] + ".jpg")
        if not cv2.imwrite(out, img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            sys.exit("opencv_peer: cannot write %s" % out)
        ms = (time.perf_counter() - t) * 1000.0
        total += ms
        print("photo: %s faces: %d ms: %.1f" % (os.path.basename(path), n, ms))
    return total


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "anonymize":
        anonymize(sys.argv[2:])
        return
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
