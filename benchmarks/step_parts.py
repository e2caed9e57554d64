"""Parts of a training step, each against the way it was done before, as a table (ms).

    python benchmarks/step_parts.py [--repeats 15] [--device cpu]

- SSIM: one monodepth2 step's photometric SSIM calls (2 sources x 4 scales with gradients,
  plus the 2 identity errors; one target) and their backward, with avg_pool2d windows and
  nothing kept between calls, against layers.SSIM (separable window sums on the CPU, the
  target's statistics kept for the step);
- Adam: one update of ResNet-18 depth + pose networks' parameters (the per-parameter loop
  against one fused kernel);
- colour jitter: the fast path's jitter of one batch's 12 colour images (3 frames x 4 scales),
  torchvision's adjust_* per item and image (reading each item's draw from the device)
  against datasets.augment.jitter_batch (rows grouped by operation, equal shapes in one batch);

Each figure is the median of --repeats runs after 3 warm-up runs.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from layers import SSIM, SSIM_C1, SSIM_C2  # noqa: E402

SIZES = [(4, 96, 320), (12, 192, 640)]  # batch, height, width


def median_ms(fn, repeats):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1000 * times[len(times) // 2]


def pooled_ssim(x, y):
    """The SSIM formula with avg_pool2d windows, recomputing the target's statistics per call."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    n = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    d = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp((1 - n / d) / 2, 0, 1)


def ssim_rows(device, repeats):
    rows = []
    for b, h, w in SIZES:
        g = torch.Generator().manual_seed(0)
        target = torch.rand(b, 3, h, w, generator=g).to(device)
        sources = [torch.rand(b, 3, h, w, generator=g).to(device) for _ in range(2)]
        warped = torch.rand(b, 3, h, w, generator=g).to(device).requires_grad_()

        def step(ssim):
            total = sum(ssim(s, target).mean() for s in sources)
            for k in range(8):  # 2 sources x 4 scales, each a different warped image
                total = total + ssim(warped * (0.9 + 0.01 * k), target).mean()
            total.backward()
            if device == "cuda":
                torch.cuda.synchronize()

        before = median_ms(lambda: step(pooled_ssim), repeats)
        after = median_ms(lambda: step(SSIM().to(device)), repeats)
        rows.append((f"SSIM, one step's 10 calls + backward, b{b} {w}x{h}", before, after))
    return rows


def adam_rows(device, repeats):
    import torchvision
    nets = [torchvision.models.resnet18() for _ in range(2)]  # depth encoder, pose encoder
    params = [p for n in nets for p in n.parameters()] + [
        torch.nn.Parameter(torch.zeros(3 * 1024 * 1024))]  # about the depth and pose decoders' size
    params = [torch.nn.Parameter(p.detach().to(device)) for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    count = sum(p.numel() for p in params) / 1e6
    out = []
    for fused in (False, True):
        optimiser = torch.optim.Adam(params, lr=1e-4, fused=fused, foreach=False if not fused else None)

        def step():
            optimiser.step()
            if device == "cuda":
                torch.cuda.synchronize()
        out.append(median_ms(step, repeats))
    return [(f"Adam update, {count:.0f} M parameters (loop -> fused)", *out)]


def per_item_jitter(batch, params, keys):
    """The jitter as it was: one item and image at a time, each item's draw read from the device."""
    from datasets.augment import apply_color_jitter, augmented_key, ColorJitter
    on = params[:, 0] > 0.5
    for key in keys:
        x = batch[key]
        batch[augmented_key(key)] = torch.stack([
            apply_color_jitter(x[i], ColorJitter.unpack(params[i, 1:].tolist())) if on[i] else x[i]
            for i in range(x.shape[0])])


def jitter_rows(device, repeats):
    import numpy as np

    from datasets.augment import ColorJitter
    aug, rows = ColorJitter(), []
    for b, h, w in SIZES:
        rng = np.random.default_rng(0)
        host = torch.stack([aug.pack(aug.sample(rng)) for _ in range(b)])
        params = host.to(device)  # the per-item jitter read them from the device; the batched one gets them on the host
        batch = {("color", f, s): torch.rand(b, 3, h // 2 ** s, w // 2 ** s).to(device)
                 for f in (0, -1, 1) for s in range(4)}
        keys = list(batch)

        def run(fn):
            fn(batch, params, keys)
            if device == "cuda":
                torch.cuda.synchronize()
        before = median_ms(lambda: run(per_item_jitter), repeats)
        after = median_ms(lambda: run(lambda batch_, _, keys_: aug.apply_batch(batch_, host, keys_)), repeats)
        rows.append((f"colour jitter, 12 images, b{b} {w}x{h}", before, after))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    rows = ssim_rows(args.device, args.repeats) + adam_rows(args.device, args.repeats) + \
        jitter_rows(args.device, args.repeats)
    print(f"\n| part ({args.device}, {torch.get_num_threads()} threads) | before (ms) | now (ms) | speed-up |")
    print("|---|---|---|---|")
    for name, before, after in rows:
        print(f"| {name} | {before:.1f} | {after:.1f} | {before / after:.2f}x |")


if __name__ == "__main__":
    main()
