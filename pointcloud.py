"""Point clouds of depth maps: back-projection with K, PLY files, a preview picture.

Points are in the camera's coordinates (x right, y down, z forward), one per pixel, with
pixel (u, v) = (column, row) at integer coordinates, as layers.BackprojectDepth does:
X = depth(u, v) * K^-1 [u, v, 1]^T. PLY is the Stanford polygon format (Turk, 1994): a
text header, then the vertices as little-endian binary records or ASCII lines; the files
written here hold one element, `vertex`, with float x, y, z and uchar red, green, blue,
which every PLY viewer (MeshLab, CloudCompare, Open3D) reads.
"""
import numpy as np

PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                         ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def pixel_rays(height, width, K):
    """(height * width) x 3 rays K^-1 [u, v, 1] of every pixel, row by row (float64)."""
    K = np.asarray(K, dtype=np.float64)[:3, :3]
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    pix = np.stack([u.ravel(), v.ravel(), np.ones(height * width)], 0)
    return (np.linalg.inv(K) @ pix).T


def backproject(depth, K):
    """depth: H x W (z along the optical axis), K: 3 x 3 (or 4 x 4) in pixels of that size ->
    (H * W) x 3 camera points (float64), row by row."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be H x W, got shape {depth.shape}")
    return pixel_rays(*depth.shape, K) * depth.reshape(-1, 1)


def write_ply(path, points, colors, comments=(), binary=True):
    """N x 3 points and N x 3 uint8 colours -> a PLY file (binary little-endian, or ASCII)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colors = np.asarray(colors).reshape(-1, 3)
    if len(colors) != len(points):
        raise ValueError(f"{len(points)} points but {len(colors)} colours")
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    header += [f"comment {c}" for c in comments for c in str(c).splitlines()]
    header += [f"element vertex {len(points)}"]
    header += [f"property float {n}" for n in "xyz"] + [f"property uchar {n}" for n in ("red", "green", "blue")]
    header += ["end_header"]
    records = np.empty(len(points), VERTEX_DTYPE)
    for k, n in enumerate("xyz"):
        records[n] = points[:, k]
    for k, n in enumerate(("red", "green", "blue")):
        records[n] = np.clip(colors[:, k], 0, 255).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(records.tobytes())
        else:
            # 9 significant digits give back the same float32
            for r in records:
                f.write(f"{r['x']:.9g} {r['y']:.9g} {r['z']:.9g} {r['red']} {r['green']} {r['blue']}\n"
                        .encode("ascii"))
    return path


def read_ply(path):
    """A PLY file's vertices -> (N x 3 float32 points, N x 3 uint8 colours or None, comments).
    Reads binary little-endian and ASCII files whose first element is `vertex` with scalar
    properties (the files write_ply writes, and most point-cloud exports)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", "replace").splitlines()
    fmt, comments, elements = None, [], []
    for line in header[1:]:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "comment":
            comments.append(line[len("comment "):])
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            if words[1] == "list":
                raise ValueError(f"{path}: list properties are not supported (element {elements[-1][0]})")
            elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: the first element is not 'vertex'")
    _, count, props = elements[0]
    if fmt == "binary_little_endian":
        dtype = np.dtype([(n, "<" + t) for n, t in props])
        records = np.frombuffer(data, dtype, count, offset=body_start)
    elif fmt == "ascii":
        lines = data[body_start:].decode("ascii").split("\n")[:count]
        table = np.array([[float(x) for x in line.split()] for line in lines]).reshape(count, len(props))
        records = np.empty(count, [(n, t) for n, t in props])
        for k, (n, _) in enumerate(props):
            records[n] = table[:, k]
    else:
        raise ValueError(f"{path}: PLY format {fmt!r} is not supported (binary_little_endian or ascii)")
    points = np.stack([records[n].astype(np.float32) for n in "xyz"], 1)
    names = records.dtype.names
    colors = (np.stack([records[n] for n in ("red", "green", "blue")], 1).astype(np.uint8)
              if all(n in names for n in ("red", "green", "blue")) else None)
    return points, colors, comments


def nice_step(extent, lines=5):
    """A grid step of 1, 2 or 5 x 10^k giving about `lines` lines over `extent`."""
    raw = max(extent, 1e-9) / lines
    power = 10 ** np.floor(np.log10(raw))
    return float(power * min((m for m in (1, 2, 5, 10) if m * power >= raw), default=10))


def _rasterise(image, px, py, depth, colors, radius=1):
    """Paint points at integer pixels (px, py) of `image` (H x W x 3), the smallest `depth`
    winning at each pixel, each as a (2 radius + 1)^2 square."""
    h, w = image.shape[:2]
    offsets = [(dx, dy) for dx in range(-radius, radius + 1) for dy in range(-radius, radius + 1)]
    xs = np.concatenate([px + dx for dx, _ in offsets])
    ys = np.concatenate([py + dy for _, dy in offsets])
    ds = np.tile(depth, len(offsets))
    cs = np.tile(colors, (len(offsets), 1))
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys, ds, cs = xs[inside], ys[inside], ds[inside], cs[inside]
    flat = ys * w + xs
    order = np.lexsort((ds, flat))  # by pixel, then nearest first
    flat, cs = flat[order], cs[order]
    first = np.unique(flat, return_index=True)[1]
    image.reshape(-1, 3)[flat[first]] = cs[first]


def render_preview(points, colors, path, units="m", size=400, title=None):
    """A picture of a camera-frame point cloud without a 3D viewer: a bird's-eye view (x
    across, z up the picture, seen from above) beside an oblique view from above, behind and
    to the left of the camera, each `size` x `size`, so the PNG is (2 size) x size. The
    views span the nearest 80 % of the points' depth (x 1.2); the floor grid (at the lowest
    point's height) is labelled in `units`; the white dot is the camera."""
    import cv2
    import PIL.Image as pil
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors, dtype=np.uint8)
    keep = np.isfinite(points).all(1) & (points[:, 2] > 0)
    points, colors = points[keep], colors[keep]
    far = float(np.percentile(points[:, 2], 80)) * 1.2 if len(points) else 1.0
    inside = (points[:, 2] <= far) & (np.abs(points[:, 0]) <= far / 2)
    points, colors = points[inside], colors[inside]
    step = nice_step(far)
    font, background, grid_colour, text_colour = cv2.FONT_HERSHEY_SIMPLEX, (24, 24, 28), (80, 80, 90), (230, 230, 230)

    # bird's-eye: x in [-far/2, far/2] across, z in [0, far] from the bottom; seen from above,
    # so the highest point (smallest y, y pointing down) wins each pixel
    top = np.full((size, size, 3), background, np.uint8)
    to_px = lambda x: np.round((np.asarray(x) / far + 0.5) * (size - 1)).astype(np.int64)  # noqa: E731
    to_py = lambda z: np.round((1 - np.asarray(z) / far) * (size - 1)).astype(np.int64)  # noqa: E731
    rows = [int(to_py(k * step)) for k in range(1, int(far / step) + 1)]
    for y in rows:
        cv2.line(top, (0, y), (size - 1, y), grid_colour, 1)
    if len(points):
        _rasterise(top, to_px(points[:, 0]), to_py(points[:, 2]), points[:, 1], colors)
    for k, y in enumerate(rows, 1):
        cv2.putText(top, f"{k * step:g} {units}", (size - 60, y - 3), font, 0.35, text_colour, 1, cv2.LINE_AA)
    cv2.circle(top, (int(to_px(0.0)), size - 4), 3, (255, 255, 255), -1)
    cv2.putText(top, "bird's-eye", (4, 14), font, 0.45, text_colour, 1, cv2.LINE_AA)

    # oblique: orthographic view 35 degrees down, 30 degrees to the side; the rows of R are
    # the viewer's right, down and forward axes in camera coordinates (y down)
    pitch, yaw = np.deg2rad(35.0), np.deg2rad(30.0)
    Ry = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    R = Rx @ Ry
    floor = float(np.percentile(points[:, 1], 99)) if len(points) else 1.0
    # framed on the points (1st to 99th percentile) and the camera
    framed = np.vstack([np.percentile(points @ R.T, [1, 99], axis=0) if len(points) else np.zeros((0, 3)),
                        np.zeros((1, 3)), np.array([[0.0, floor, 0.0]]) @ R.T])
    lo, hi = framed[:, :2].min(0), framed[:, :2].max(0)
    zoom = 0.94 * (size - 1) / max(hi - lo)
    offset = (size - 1) / 2 - zoom * (lo + hi) / 2
    screen = lambda p: np.round((np.atleast_2d(p) @ R.T)[:, :2] * zoom + offset).astype(np.int64)  # noqa: E731
    side = np.full((size, size, 3), background, np.uint8)
    across = np.arange(-np.floor(far / 2 / step), np.floor(far / 2 / step) + 1) * step
    ahead = np.arange(0, np.floor(far / step) + 1) * step
    lines = [((x, floor, 0.0), (x, floor, far)) for x in across] + \
        [((-far / 2, floor, z), (far / 2, floor, z)) for z in ahead]
    for a, b in lines:
        (ax, ay), (bx, by) = screen(np.array([a, b]))
        cv2.line(side, (int(ax), int(ay)), (int(bx), int(by)), grid_colour, 1, cv2.LINE_AA)
    if len(points):
        q = screen(points)
        _rasterise(side, q[:, 0], q[:, 1], points @ R[2], colors)
    (cx, cy), = screen(np.zeros(3))
    cv2.circle(side, (int(cx), int(cy)), 3, (255, 255, 255), -1)
    cv2.putText(side, f"oblique, floor grid {step:g} {units}", (4, 14), font, 0.45, text_colour, 1, cv2.LINE_AA)

    picture = np.concatenate([top, side], 1)
    cv2.line(picture, (size, 0), (size, size - 1), (255, 255, 255), 1)
    if title:
        cv2.putText(picture, title, (4, size - 8), font, 0.4, text_colour, 1, cv2.LINE_AA)
    pil.fromarray(picture).save(path)
    return path
