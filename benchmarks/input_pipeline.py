"""Throughput of the CIFAR-10 input pipeline (decode once, then iterate).

Measures the one-off JPEG decode of a split, then images/s of
``iterate_batches`` (shuffle + random crop/flip + normalisation to float32) over
whole epochs. The last line is machine-readable: ``pipeline_img_per_s=<float>``.

Usage:
  .venv/bin/python benchmarks/input_pipeline.py --data-dir ../shared/data
  .venv/bin/python benchmarks/input_pipeline.py --synthetic 50000   # no data needed
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from l2d_jax import data as l2d_data  # noqa: E402


def main(argv: list[str] | None = None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default="../shared/data",
                      help="shared data root holding cifar10_images/ (default: %(default)s)")
  parser.add_argument("--split", default="train", choices=("train", "test"),
                      help="CIFAR-10 split to decode and iterate (default: %(default)s)")
  parser.add_argument("--cache-dir", default=None,
                      help="optional .npz cache folder for the decoded split")
  parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                      help="skip decoding; iterate N random uint8 images instead")
  parser.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
  parser.add_argument("--epochs", type=int, default=2, help="timed epochs (default: %(default)s)")
  parser.add_argument("--prefetch", type=int, default=0,
                      help="batches prepared ahead in a background thread (default: %(default)s)")
  parser.add_argument("--no-augment", action="store_true", help="disable crop/flip")
  parser.add_argument("--no-normalize", action="store_true",
                      help="yield uint8 images (normalise on the accelerator instead)")
  args = parser.parse_args(argv)

  if args.synthetic:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.synthetic, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.synthetic).astype(np.int32)
    print(f"synthetic images: {images.shape}")
  else:
    t0 = time.perf_counter()
    images, labels = l2d_data.load_cifar10_images(
        args.data_dir, split=args.split, cache_dir=args.cache_dir)
    dt = time.perf_counter() - t0
    print(f"decode {args.split}: {images.shape[0]} images in {dt:.2f} s "
          f"({images.shape[0] / dt:,.0f} img/s"
          f"{f', cache_dir={args.cache_dir}' if args.cache_dir else ''})")

  kwargs = dict(batch_size=args.batch_size, seed=0, augment=not args.no_augment,
                normalize=not args.no_normalize, prefetch=args.prefetch)
  # Warm-up: builds the crop tables and touches the arrays once.
  for _ in zip(range(3), l2d_data.iterate_batches(images, labels, epoch=999, **kwargs)):
    pass
  n = 0
  t0 = time.perf_counter()
  for epoch in range(args.epochs):
    for batch in l2d_data.iterate_batches(images, labels, epoch=epoch, **kwargs):
      n += batch["image"].shape[0]
  dt = time.perf_counter() - t0
  rate = n / dt
  print(f"iterate_batches(batch_size={args.batch_size}, augment={not args.no_augment}, "
        f"normalize={not args.no_normalize}, prefetch={args.prefetch}): {n} images in "
        f"{dt:.2f} s, {dt / max(1, n // args.batch_size) * 1e3:.2f} ms/batch")
  print(f"pipeline_img_per_s={rate:.1f}")
  return rate


if __name__ == "__main__":
  main()
