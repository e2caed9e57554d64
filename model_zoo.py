"""Released models by name: download (with a progress bar), check the MD5, unzip into a
cache folder, and return the weight folder.

    python test_simple.py --image_path assets/test_image.jpg --model_name mono+stereo_640x192

The cache is $DEPTHKIT_CACHE, else $XDG_CACHE_HOME/depthkit, else ~/.cache/depthkit, with
one folder per model (models/<name>/encoder.pth, depth.pth, ...). Offline, put the
unzipped folder there by hand (the error message says where).
"""
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile

from tqdm import tqdm

MONODEPTH2_URL = "https://storage.googleapis.com/niantic-lon-static/research/monodepth2/"
# name -> (URL, MD5 of the zip): monodepth2's released KITTI models (ResNet-18, eigen_zhou)
RELEASED = {
    "mono_640x192": (MONODEPTH2_URL + "mono_640x192.zip", "a964b8356e08a02d009609d9e3928f7c"),
    "stereo_640x192": (MONODEPTH2_URL + "stereo_640x192.zip", "3dfb76bcff0786e4ec07ac00f658dd07"),
    "mono+stereo_640x192": (MONODEPTH2_URL + "mono%2Bstereo_640x192.zip", "c024d69012485ed05d7eaa9617a96b81"),
    "mono_no_pt_640x192": (MONODEPTH2_URL + "mono_no_pt_640x192.zip", "9c2f071e35027c895a4728358ffc913a"),
    "stereo_no_pt_640x192": (MONODEPTH2_URL + "stereo_no_pt_640x192.zip", "41ec2de112905f85541ac33a854742d1"),
    "mono+stereo_no_pt_640x192": (MONODEPTH2_URL + "mono%2Bstereo_no_pt_640x192.zip",
                                  "46c3b824f541d143a45c37df65fbab0a"),
    "mono_1024x320": (MONODEPTH2_URL + "mono_1024x320.zip", "0ab0766efdfeea89a0d9ea8ba90e1e63"),
    "stereo_1024x320": (MONODEPTH2_URL + "stereo_1024x320.zip", "afc2f2126d70cf3fdf26b550898b501a"),
    "mono+stereo_1024x320": (MONODEPTH2_URL + "mono%2Bstereo_1024x320.zip", "cdc5fc9b23513c07d5b19235d9ef08f7"),
}
CHUNK = 1 << 20


def cache_dir():
    root = os.environ.get("DEPTHKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "depthkit")
    return os.path.join(root, "models")


def md5_of(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def released_model(name, root=None, table=None, progress=True):
    """The weight folder of released model `name`, downloaded and unzipped on first use."""
    table = RELEASED if table is None else table
    if name not in table:
        raise SystemExit(f"--model_name {name!r}: released models are {', '.join(sorted(table))}")
    root = root or cache_dir()
    folder = os.path.join(root, name)
    if os.path.isfile(os.path.join(folder, "encoder.pth")):
        return folder
    url, md5 = table[name]
    os.makedirs(root, exist_ok=True)
    fd, archive = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".zip")
    os.close(fd)
    try:
        try:
            download(url, archive, f"download {name}", progress)
        except OSError as e:
            raise SystemExit(f"--model_name {name}: could not download {url} ({e}). Offline, download it on a "
                             f"machine with internet, unzip it into {folder}/ (encoder.pth, depth.pth, ...), or "
                             "pass --load_weights_folder") from None
        got = md5_of(archive)
        if got != md5:
            raise SystemExit(f"--model_name {name}: the download from {url} has MD5 {got}, not {md5} (a broken or "
                             "changed file); nothing was kept. Try again, or unzip a good copy into "
                             f"{folder}/")
        unzip_into(archive, folder)
    finally:
        if os.path.exists(archive):
            os.remove(archive)
    print(f"-> {name} is in {folder}")
    return folder


def download(url, path, label, progress=True):
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, desc=label, unit="B", unit_scale=True, disable=not progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def unzip_into(archive, folder):
    """Extract the zip's files (flattened: released zips hold the .pth files, at the top or in
    one folder) into `folder`, built beside it and renamed into place."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(folder), prefix=".unzip.")
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.infolist():
                if member.is_dir():
                    continue
                target = os.path.join(tmp, os.path.basename(member.filename))
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not os.path.isfile(os.path.join(tmp, "encoder.pth")):
            raise SystemExit(f"{archive}: no encoder.pth inside; not a weight folder")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
