"""The image's Python install cannot be stopped by packages apt owns: the conflict reproduced, offline.

On the base image (Ubuntu 24.04) apt installs Python packages into the system Python: a dist-info with
``INSTALLER`` = ``debian`` and no ``RECORD`` file. An install that must upgrade one (runpod 1.12 needs
cryptography >= 50, requests >= 2.34, urllib3 >= 2.7; Ubuntu ships 41, 2.31, 2.0) has to uninstall it
first, and pip cannot: "Cannot uninstall ..., RECORD file not found ... installed by debian". The
Dockerfile installs into a virtual environment created with ``--system-site-packages`` over the base's
Python instead: the newer version goes into the environment and shadows apt's, apt's files stay as
they are, and the base's own packages (torch) are used without being installed again.

Here a "base" interpreter holds an apt-owned package (41.0.7, installed the apt way) and a pip-installed
stand-in for torch; the requirements need the apt-owned package >= 50 and exactly that torch. The wheels
are generated here and pip runs with ``--no-index``: no network. The base is a virtual environment itself
(a venv cannot be the base of another one), so the layered environment reaches the base's site-packages
through a .pth file, which puts them after its own, where ``--system-site-packages`` puts the system's.
pip runs against each interpreter with ``pip --python``.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APT_OWNED, APT_VERSION, NEEDED = "apt-owned-crypto", "41.0.7", "50.0.0"
TORCH, TORCH_VERSION = "base-torch", "2.8.0"


def _module(name: str) -> str:
    return name.replace("-", "_")


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    files = {f"{_module(name)}/__init__.py": f"VERSION = {version!r}\n".encode()}
    info = f"{_module(name)}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{_module(name)}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def site_packages(env: Path) -> Path:
    return next((env / "lib").glob("python3*/site-packages"))


def install_the_apt_way(site: Path, name: str, version: str) -> Path:
    """What apt leaves: the module and a dist-info saying INSTALLER=debian, with no RECORD to uninstall by."""
    (site / _module(name)).mkdir()
    (site / _module(name) / "__init__.py").write_text(f"VERSION = {version!r}\n")
    info = site / f"{_module(name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("debian\n")
    return info


def pip(python: Path, *args: str, wheels: Path) -> subprocess.CompletedProcess[str]:
    # --isolated: no PIP_* variable or pip.conf of this machine (a find-links, an index) takes part.
    command = [sys.executable, "-m", "pip", "--python", str(python), "--isolated"]
    command += ["--disable-pip-version-check", "--no-cache-dir"]
    command += [*args, "--no-index", "--find-links", str(wheels)]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def venv(path: Path, *options: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", *options, str(path)], check=True)
    return path / "bin" / "python"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(base python, its apt-owned dist-info, the wheels folder, the requirements file)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, APT_OWNED, NEEDED)
    make_wheel(wheels, TORCH, TORCH_VERSION)
    make_wheel(wheels, "wan-worker-deps", "1.0", (f"{APT_OWNED}>={NEEDED}", f"{TORCH}=={TORCH_VERSION}"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("wan-worker-deps==1.0\n")
    python = venv(tmp_path / "base")
    installed = pip(python, "install", f"{TORCH}=={TORCH_VERSION}", wheels=wheels)
    assert installed.returncode == 0, installed.stderr
    apt_info = install_the_apt_way(site_packages(tmp_path / "base"), APT_OWNED, APT_VERSION)
    return python, apt_info, wheels, requirements


def test_installing_into_the_base_python_stops_at_the_apt_owned_package(
    base: tuple[Path, Path, Path, Path],
) -> None:
    python, apt_info, wheels, requirements = base
    before = snapshot(apt_info.parent)

    done = pip(python, "install", "-r", str(requirements), wheels=wheels)

    assert done.returncode != 0
    output = done.stdout + done.stderr
    # pip 24.0 (Ubuntu's) and 26 word it differently; both name the package, the missing RECORD and apt.
    assert f"Cannot uninstall {APT_OWNED} {APT_VERSION}" in output and "RECORD file" in output
    assert "installed by debian" in output
    assert snapshot(apt_info.parent) == before  # stopped before it changed anything


def test_a_venv_over_the_base_installs_the_newer_version_and_leaves_apts_alone(
    base: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    _, apt_info, wheels, requirements = base
    base_site = apt_info.parent
    layered = venv(tmp_path / "layered", "--system-site-packages")
    (site_packages(tmp_path / "layered") / "base-site-packages.pth").write_text(f"{base_site}\n")
    before = snapshot(base_site)

    done = pip(layered, "install", "-r", str(requirements), wheels=wheels)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Not uninstalling {APT_OWNED}" in done.stdout + done.stderr  # outside the environment
    assert snapshot(base_site) == before  # apt's files and the base's torch: untouched
    own = site_packages(tmp_path / "layered")
    assert (own / _module(APT_OWNED) / "__init__.py").exists()
    assert not (own / _module(TORCH)).exists()  # the base's torch is used, not installed again
    imported = subprocess.run(
        [
            str(layered),
            "-c",
            f"import {_module(APT_OWNED)} as a, {_module(TORCH)} as t; "
            "print(a.VERSION, t.VERSION, t.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert imported[:2] == [NEEDED, TORCH_VERSION] and imported[2].startswith(str(base_site))


def test_the_build_check_reads_what_the_environment_imports_and_names_what_it_shadows(
    base: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    _, apt_info, wheels, requirements = base
    layered = venv(tmp_path / "layered", "--system-site-packages")
    (site_packages(tmp_path / "layered") / "base-site-packages.pth").write_text(f"{apt_info.parent}\n")
    assert pip(layered, "install", "-r", str(requirements), wheels=wheels).returncode == 0

    report = subprocess.run(
        [
            str(layered),
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import install_custom_nodes as b; "
            f"print(b.installed_distributions()[{APT_OWNED!r}]); print(b.shadowed_distributions())",
            str(ROOT / "docker"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    assert report[0] == NEEDED  # the version Python imports, not the shadowed one
    assert f"{APT_OWNED} {APT_VERSION} -> {NEEDED}" in report[1]
