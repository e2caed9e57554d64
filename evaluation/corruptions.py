"""Image corruptions of KITTI-C / RoboDepth (Kong et al., "RoboDepth: Robust Out-of-Distribution
Depth Estimation under Corruptions"): the 15 ImageNet-C corruptions (Hendrycks & Dietterich
2019) as the `imagecorruptions` package (Michaelis et al. 2019) generalises them to any image
size, which RoboDepth applies to the 640 x 192 network inputs, plus RoboDepth's dark,
color_quant and iso_noise. Severity 1-5; severity 0 is the clean image.

The constants per severity are theirs; the code is written here with numpy, scipy and
OpenCV. Departures, all deliberate:
- frost: ImageNet-C blends photographs of frost; a procedural frost texture (fractal noise
  and short bright crystal strokes, bluish white) is generated instead.
- glass_blur: ImageNet-C swaps each pixel with a random neighbour, pixel after pixel; here
  each pixel takes the value of a random neighbour within the same distance, for all pixels
  at once (the same frosted-glass look, vectorised).
- motion_blur, zoom_blur, snow: the same kernels and zoom factors, applied with OpenCV
  (filter2D, resize) instead of scipy's zoom and array shifts.

Every random draw comes from the generator passed in (corruption_rng: seeded from the
corruption's name, the image's index and the frame), so an image gets the same corruption in
every run, different images get different noise, and the severities of one image share
their draws (noise patterns grow with severity instead of changing).
"""
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str  # RoboDepth's grouping
    apply: object  # (image float32 H x W x 3 RGB in [0, 1], severity 1-5, rng) -> image in [0, 1]


CORRUPTIONS = {}


def register(name, family):
    def wrap(fn):
        CORRUPTIONS[name] = Corruption(name, family, fn)
        return fn
    return wrap


def corruption_rng(name, index, frame=0):
    """The generator of one image's corruption: seeded from the corruption's name, the
    image's index in its test set and the frame id (not the severity)."""
    frame_key = zlib.crc32(str(frame).encode())
    return np.random.default_rng([zlib.crc32(name.encode()), int(index), frame_key])


def corrupt(image, name, severity, rng):
    """image: H x W x 3 uint8 RGB -> the corrupted uint8 image (the image itself at severity 0)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}")
    if not 0 <= int(severity) <= 5:
        raise ValueError(f"severity {severity}: 0 (clean) to 5")
    if severity == 0:
        return image
    x = np.asarray(image, np.float32) / 255
    out = CORRUPTIONS[name].apply(x, int(severity), rng)
    return np.clip(np.rint(np.asarray(out, np.float32) * 255), 0, 255).astype(np.uint8)


def _level(values, severity):
    return values[severity - 1]


# ------------------------------------------------------------------ helpers
def _gaussian(x, sigma, mode="nearest", truncate=4.0):
    """Spatial Gaussian blur of an H x W (x C) image (channels independent)."""
    sigmas = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def disk_kernel(radius, alias_blur):
    """ImageNet-C's defocus kernel: a disk of `radius` on a grid of half-size max(8, radius),
    normalised, then a small Gaussian (3 x 3, or 5 x 5 above radius 8) against aliasing."""
    half = 8 if radius <= 8 else int(radius)
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    size = 3 if radius <= 8 else 5
    return cv2.GaussianBlur(disk, (size, size), alias_blur)


def motion_kernel(radius, sigma, angle_deg):
    """A one-sided motion-blur kernel: 2 radius + 1 taps with Gaussian weights exp(-i^2 / 2
    sigma^2) (normalised), tap i at i pixels along the angle, rounded to the pixel grid."""
    width = 2 * radius + 1
    weights = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    a = np.deg2rad(angle_deg)
    offsets = [(int(np.ceil(i * np.sin(a) - 0.5)), int(np.ceil(i * np.cos(a) - 0.5))) for i in range(width)]
    half = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    for w, (dy, dx) in zip(weights, offsets):
        kernel[half + dy, half + dx] += w
    return kernel


def motion_blur_image(x, radius, sigma, angle_deg):
    """x blurred along angle_deg (degrees, image x to the right, y down); borders replicated."""
    kernel = motion_kernel(radius, sigma, angle_deg)
    return cv2.filter2D(np.ascontiguousarray(x, np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)


def clipped_zoom(x, factor):
    """The centre 1/factor of x enlarged by `factor` back to x's size (bilinear)."""
    h, w = x.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(x[top:top + ch, left:left + cw])
    out_h, out_w = max(h, int(round(ch * factor))), max(w, int(round(cw * factor)))
    zoomed = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if zoomed.ndim < x.ndim:
        zoomed = zoomed[..., None]
    return zoomed[:h, :w]


def plasma_fractal(size, decay, rng):
    """A size x size (power of two) diamond-square height map in [0, 1]: each level's random
    offsets have amplitude wibble^2, wibble starting at 100 and divided by `decay` per level
    (ImageNet-C's fog map); the map wraps around."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        # square step: the centre of each square = mean of its 4 corners + noise
        corners = grid[0::step, 0::step]
        total = corners + np.roll(corners, -1, 0)
        total = total + np.roll(total, -1, 1)
        grid[half::step, half::step] = total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)
        # diamond step: each edge midpoint = mean of its 4 diamond neighbours + noise
        centres = grid[half::step, half::step]
        corners = grid[0::step, 0::step]
        top = corners + np.roll(corners, -1, 1) + centres + np.roll(centres, 1, 0)  # points (0, half)
        grid[0::step, half::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        left = corners + np.roll(corners, -1, 0) + centres + np.roll(centres, 1, 1)  # points (half, 0)
        grid[half::step, 0::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / max(grid.max(), 1e-12)


def frost_texture(height, width, rng):
    """A procedural frost layer (H x W x 3 in [0, 1], RGB): fractal haze and many short bright
    ice strokes in random directions, softened, bluish white. Stands in for ImageNet-C's frost
    photographs (mean about 0.4, bright crystals on a darker ground)."""
    size = 1 << int(np.ceil(np.log2(max(height, width, 2))))
    haze = plasma_fractal(size, 1.8, rng)[:height, :width]
    strokes = np.zeros((height, width), np.float32)
    count = int(height * width / 60)
    starts = rng.uniform(0, 1, (count, 2)) * (width, height)
    angles = rng.uniform(0, np.pi, count)
    lengths = rng.uniform(2, 10, count) * max(height, width) / 320
    values = rng.uniform(0.4, 1.0, count)
    for (x0, y0), a, length, v in zip(starts, angles, lengths, values):
        x1, y1 = x0 + length * np.cos(a), y0 + length * np.sin(a)
        cv2.line(strokes, (int(x0), int(y0)), (int(x1), int(y1)), float(v), 1, cv2.LINE_AA)
    strokes = cv2.GaussianBlur(strokes, (0, 0), 0.6)
    frost = np.clip(0.55 * haze + 0.75 * strokes, 0, 1)
    tint = np.array([0.86, 0.93, 1.0], np.float32)  # R, G, B
    return frost[..., None] * tint


def _rgb_to_gray(x):
    return cv2.cvtColor(np.ascontiguousarray(x, np.float32), cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------ noise
@register("gaussian_noise", "data & processing")
def gaussian_noise(x, s, rng):
    return x + rng.standard_normal(x.shape) * _level([.08, .12, .18, .26, .38], s)


@register("shot_noise", "data & processing")
def shot_noise(x, s, rng):
    c = _level([60, 25, 12, 5, 3], s)
    return rng.poisson(x * c) / c


@register("impulse_noise", "data & processing")
def impulse_noise(x, s, rng):
    """Salt and pepper: a fraction c of the values (each channel of each pixel) set to 0 or 1."""
    c = _level([.03, .06, .09, .17, .27], s)
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float32), x)


@register("iso_noise", "data & processing")
def iso_noise(x, s, rng):
    """RoboDepth's ISO noise: Poisson noise (25) then Gaussian noise 0.7 x gaussian_noise's."""
    x = np.clip(rng.poisson(x * 25) / 25, 0, 1)
    return x + rng.standard_normal(x.shape) * 0.7 * _level([.08, .12, .18, .26, .38], s)


# ------------------------------------------------------------------ blur
@register("defocus_blur", "sensor & movement")
def defocus_blur(x, s, rng):
    radius, alias = _level([(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)], s)
    return cv2.filter2D(np.ascontiguousarray(x), -1, disk_kernel(radius, alias))


@register("glass_blur", "sensor & movement")
def glass_blur(x, s, rng):
    sigma, delta, iterations = _level([(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)], s)
    x = np.floor(_gaussian(x, sigma) * 255) / 255  # ImageNet-C shuffles the 8-bit image
    h, w = x.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(iterations):
        dy = rng.integers(-delta, delta, (h, w))  # [-delta, delta) as ImageNet-C's randint
        dx = rng.integers(-delta, delta, (h, w))
        x = x[np.clip(rows + dy, 0, h - 1), np.clip(cols + dx, 0, w - 1)]
    return _gaussian(x, sigma)


@register("motion_blur", "sensor & movement")
def motion_blur(x, s, rng):
    radius, sigma = _level([(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)], s)
    return motion_blur_image(x, radius, sigma, rng.uniform(-45, 45))


@register("zoom_blur", "sensor & movement")
def zoom_blur(x, s, rng):
    factors = _level([np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                      np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)], s)
    out = x.copy()
    for z in factors:
        out += clipped_zoom(x, z)
    return out / (len(factors) + 1)


# ------------------------------------------------------------------ weather & lighting
@register("brightness", "weather & lighting")
def brightness(x, s, rng):
    hsv = cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + _level([.1, .2, .3, .4, .5], s), 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


@register("dark", "weather & lighting")
def dark(x, s, rng):
    """RoboDepth's low light: intensities mapped to [0, c] with gamma 2, then Poisson
    (10 x shot_noise's levels) and Gaussian (0.1 x gaussian_noise's levels) sensor noise."""
    c = _level([0.60, 0.50, 0.40, 0.30, 0.20], s)
    lo, hi = float(x.min()), float(x.max())
    x = ((x - lo) / max(hi - lo, 1e-12)) ** 2 * c
    photons = 10 * _level([60, 25, 12, 5, 3], s)
    x = np.clip(rng.poisson(x * photons) / photons, 0, 1)
    return x + rng.standard_normal(x.shape) * 0.1 * _level([.08, .12, .18, .26, .38], s)


@register("fog", "weather & lighting")
def fog(x, s, rng):
    strength, decay = _level([(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)], s)
    h, w = x.shape[:2]
    size = 1 << int(np.ceil(np.log2(max(h, w, 3))))
    peak = float(x.max())
    x = x + strength * plasma_fractal(size, decay, rng)[:h, :w, None]
    return x * peak / (peak + strength)


@register("frost", "weather & lighting")
def frost(x, s, rng):
    image_weight, frost_weight = _level([(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)], s)
    return image_weight * x + frost_weight * frost_texture(x.shape[0], x.shape[1], rng)


@register("snow", "weather & lighting")
def snow(x, s, rng):
    loc, scale, zoom, threshold, radius, sigma, blend = _level(
        [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)], s)
    h, w = x.shape[:2]
    flakes = clipped_zoom(rng.normal(loc, scale, (h, w)).astype(np.float32), zoom)
    flakes[flakes < threshold] = 0
    flakes = motion_blur_image(np.clip(flakes, 0, 1), radius, sigma, rng.uniform(-135, -45))
    flakes = (np.rint(flakes * 255) / 255)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, _rgb_to_gray(x)[..., None] * 1.5 + 0.5)
    return x + flakes + np.rot90(flakes, 2)


@register("contrast", "weather & lighting")
def contrast(x, s, rng):
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * _level([0.4, .3, .2, .1, .05], s) + means


# ------------------------------------------------------------------ digital
@register("elastic_transform", "sensor & movement")
def elastic_transform(x, s, rng):
    """Each pixel moved by a smooth random field: uniform noise of +-0.5 % of the height,
    Gaussian-smoothed (sigma 1 % of each side, truncated at 3 sigma) and times alpha."""
    h, w = x.shape[:2]
    alpha = 250 * _level([0.05, 0.065, 0.085, 0.1, 0.12], s)
    limit = h * 0.005
    sigma = (h * 0.01, w * 0.01)
    dx = ndimage.gaussian_filter(rng.uniform(-limit, limit, (h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-limit, limit, (h, w)), sigma, mode="reflect", truncate=3) * alpha
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(x), cols + dx.astype(np.float32), rows + dy.astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@register("color_quant", "sensor & movement")
def color_quant(x, s, rng):
    """Posterise to 6 - severity bits per channel."""
    bits = 6 - s
    values = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return (values & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype(np.float32) / 255


@register("pixelate", "data & processing")
def pixelate(x, s, rng):
    c = _level([0.6, 0.5, 0.4, 0.3, 0.25], s)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, int(w * c)), max(1, int(h * c))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@register("jpeg_compression", "data & processing")
def jpeg_compression(x, s, rng):
    values = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(values, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, _level([25, 18, 15, 10, 7], s)])
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


# RoboDepth's order (its tables): weather & lighting, sensor & movement, data & processing
ROBODEPTH_ORDER = ("brightness", "dark", "fog", "frost", "snow", "contrast",
                   "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform", "color_quant",
                   "gaussian_noise", "impulse_noise", "shot_noise", "iso_noise", "pixelate", "jpeg_compression")
assert set(ROBODEPTH_ORDER) == set(CORRUPTIONS)
