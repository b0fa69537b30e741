"""The images `make images` built, run as a cluster would run them (issue 18).

Each test runs a command inside an image's unpacked root filesystem (optiserve_testing/image_exec):
the image's own Entrypoint, Env and USER, the root read-only, /tmp a writable volume as the
chart gives it. What passes here is what the OCI archive holds, not this machine's virtualenv.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from optiserve_testing.image_tuning import SHORT_TUNING, short_search_problems
from optiserve_testing.images import REPO_ROOT, BuiltImage, pip_ca_bundle
from tests.images.conftest import run_in_image
from tests.triton.tiny_models import WEIGHT, matmul_relu

pytestmark = pytest.mark.images

# The operator image: a Debian base with python3 (~120 MiB here, ~150 MiB for python:slim)
# plus kopf, the kubernetes client and pydantic (~60 MiB). 350 MiB leaves room for a few more
# small dependencies; torch alone (1.2 GiB without its CUDA wheels) could never fit.
OPERATOR_MAX_MIB = 350
PINS = dict(
    line.split("==", 1)
    for line in (REPO_ROOT / ".ci" / "constraints.txt").read_text().split()
    if "==" in line
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


CANONICAL_PINS = {canonical(name): version for name, version in PINS.items()}


@pytest.mark.parametrize("name", ["operator", "optimizer"])
def test_the_entrypoint_answers_help_inside_the_image(
    images: dict[str, BuiltImage], name: str, tmp_path: Path
) -> None:
    image = images[name]
    entrypoint = image.config.get("Entrypoint") or []
    assert entrypoint == ["optiserve", {"operator": "operator", "optimizer": "optimize"}[name]]
    code, out, err = run_in_image(image, [*entrypoint, "--help"], tmp_path)
    assert code == 0, err
    assert "usage:" in out


PROBE = """
import errno, json, os
def attempt(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return "written"
    except OSError as err:
        return errno.errorcode[err.errno]
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "root": [attempt(p) for p in ("/probe", "/opt/venv/probe", "/etc/probe")],
    "tmp": attempt("/tmp/probe")}))
"""


@pytest.mark.parametrize("name", ["operator", "optimizer"])
def test_the_image_runs_as_10001_on_a_read_only_root(
    images: dict[str, BuiltImage], name: str, tmp_path: Path
) -> None:
    image = images[name]
    assert image.user == (10001, 10001)
    code, out, err = run_in_image(image, ["python3", "-c", PROBE], tmp_path)
    assert code == 0, err
    seen = json.loads(out)
    assert (seen["uid"], seen["gid"], seen["groups"]) == (10001, 10001, [10001])
    # EROFS, not EACCES: the mount is read-only, whoever the user (readOnlyRootFilesystem).
    assert seen["root"] == [errno.errorcode[errno.EROFS]] * 3
    assert seen["tmp"] == "written"
    # ... and the image's files are root's anyway: 10001 owns nothing outside /tmp.
    venv = image.rootfs() / "opt" / "venv"
    assert venv.stat().st_uid == 0 and not venv.stat().st_mode & 0o022


@pytest.mark.parametrize("name", ["operator", "optimizer"])
def test_the_user_has_a_name_without_a_passwd_entry(
    images: dict[str, BuiltImage], name: str, tmp_path: Path
) -> None:
    """UID 10001 (or any runAsUser) is in no /etc/passwd; getpass.getuser(), which kopf calls
    for its peering identity and torch for its cache folders, must not fail on that."""
    argv = ["python3", "-c", "import getpass, os; print(getpass.getuser(), os.getuid())"]
    code, out, err = run_in_image(images[name], argv, tmp_path)
    assert code == 0, err
    assert out.split() == ["optiserve", "10001"]
    passwd = (images[name].rootfs() / "etc/passwd").read_text()
    assert ":10001:" not in passwd  # the point: no entry is needed


NO_TORCH = """
import importlib.util, sys
import optiserve_operator.handlers, optiserve_operator.main
heavy = {"torch", "numpy", "onnxruntime", "onnx", "tensorrt"}
print(sorted(heavy & {name.split(".")[0] for name in sys.modules}))
print(sorted(n for n in heavy if importlib.util.find_spec(n) is not None))
"""


def test_the_operator_image_has_and_imports_no_torch(
    images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    code, out, err = run_in_image(images["operator"], ["python3", "-c", NO_TORCH], tmp_path)
    assert code == 0, err
    imported, installed = out.splitlines()
    assert imported == "[]", f"the operator imports {imported}"
    assert installed == "[]", f"the operator image holds {installed}"


def test_the_operator_image_stays_small(images: dict[str, BuiltImage]) -> None:
    image = images["operator"]
    files = [p for p in image.rootfs().rglob("*") if p.is_file() and not p.is_symlink()]
    unpacked = sum(p.stat().st_size for p in files)
    assert unpacked < OPERATOR_MAX_MIB * 2**20, f"operator image {unpacked / 2**20:.0f} MiB"
    assert image.archive.stat().st_size < unpacked  # the layers are compressed


ML_STACK = """
import json, numpy, onnxruntime, torch
x = torch.ones(2, 3)
print(json.dumps({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
    "sum": float((x @ x.T).sum()), "providers": onnxruntime.get_available_providers()}))
"""


def test_the_optimizer_image_runs_torch_and_onnxruntime_at_the_pins(
    images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    code, out, err = run_in_image(images["optimizer"], ["python3", "-c", ML_STACK], tmp_path)
    assert code == 0, err
    seen = json.loads(out.splitlines()[-1])
    assert seen["torch"].split("+")[0] == PINS["torch"]
    assert seen["onnxruntime"] == PINS["onnxruntime"]
    assert seen["sum"] == 12.0  # (2x3 ones) @ (3x2 ones): four 3s
    assert "CPUExecutionProvider" in seen["providers"]


def test_a_missing_executable_fails_naming_the_image(
    images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    image = images["operator"]
    code, _, err = run_in_image(image, ["optiserve", "--help"], tmp_path, hide=["/opt/venv/bin"])
    assert code == 127
    assert f"image {image.reference}" in err and '"optiserve" not found' in err


def test_a_missing_package_fails_with_an_import_error(
    images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    image = images["operator"]
    site = next((image.rootfs() / "opt/venv/lib").glob("python3*/site-packages"))
    hidden = "/" + str((site / "kopf").relative_to(image.rootfs()))
    argv = ["python3", "-c", "import optiserve_operator.handlers"]
    code, _, err = run_in_image(image, argv, tmp_path)
    assert code == 0, err  # the image as built has it
    code, _, err = run_in_image(image, argv, tmp_path / "broken", hide=[hidden])
    assert code == 1
    assert "ModuleNotFoundError: No module named 'kopf'" in err


PEM = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def certificates(data: bytes) -> set[bytes]:
    return {b"".join(block.split()) for block in PEM.findall(data)}


@pytest.mark.parametrize("name", ["operator", "optimizer"])
def test_the_pip_ca_bundle_is_not_in_the_image(images: dict[str, BuiltImage], name: str) -> None:
    """The bundle reached pip as a build secret: no file of the image is it, none holds a
    certificate that only it has (beyond the image's own Debian trust store), no env names it."""
    bundle = pip_ca_bundle()
    if bundle is None:
        pytest.skip("pip has no CA bundle configured here: there is nothing to keep out")
    wanted = bundle.read_bytes()
    digest = hashlib.sha256(wanted).digest()
    root = images[name].rootfs()
    own = certificates((root / "etc/ssl/certs/ca-certificates.crt").read_bytes())
    only_in_bundle = certificates(wanted) - own
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if size == len(wanted):
            assert hashlib.sha256(path.read_bytes()).digest() != digest, f"{path} is the bundle"
        if only_in_bundle and size < 2**21:
            data = path.read_bytes()
            if b"-----BEGIN CERTIFICATE-----" in data:
                assert not certificates(data) & only_in_bundle, f"{path} has the bundle's CA"
    assert not any((root / "run" / "secrets").glob("*"))
    env = images[name].config.get("Env", [])
    assert not any("PIP_CERT" in item or "pip-ca" in item for item in env)


@pytest.mark.parametrize("name", ["operator", "optimizer"])
def test_the_sbom_lists_what_the_image_holds(images: dict[str, BuiltImage], name: str) -> None:
    image = images[name]
    folder = image.archive.parent
    sbom = json.loads((folder / f"{name}.sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == image.digest.split(":")[1]
    purls = {c["purl"] for c in sbom["components"]}
    # Debian packages: exactly the image's dpkg database.
    status = (image.rootfs() / "var/lib/dpkg/status").read_text()
    stanzas = [dict(re.findall(r"^(\w[\w-]*): (.*)$", s, re.M)) for s in status.split("\n\n")]
    installed = {s["Package"] for s in stanzas if s.get("Status") == "install ok installed"}
    debs = {p.split("/")[2].split("@")[0] for p in purls if p.startswith("pkg:deb/")}
    assert debs == installed and "python3.11" in debs
    # Python packages: exactly the venv's dist-infos, at the project's pins.
    site = next((image.rootfs() / "opt/venv/lib").glob("python3*/site-packages"))
    dist_infos = {canonical(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
    listed = dict(
        line.split("==") for line in (folder / f"{name}.python.txt").read_text().splitlines()
    )
    assert dist_infos <= {canonical(n) for n in listed}
    for package, version in listed.items():
        assert f"pkg:pypi/{canonical(package)}@" in " ".join(purls)
        pin = CANONICAL_PINS.get(canonical(package))
        assert pin is None or pin == version, f"{package} {version}, pinned {pin}"
    unpinned = {canonical(n) for n in listed} - set(CANONICAL_PINS)
    assert unpinned <= {"optiserve", "pip", "setuptools", "wheel"}, unpinned
    assert ("torch" in {canonical(n) for n in listed}) == (name == "optimizer")


# serving.tuning inside the optimizer image: the search's local tritonserver (the nvidia-pytriton
# wheel's) found, started on a read-only root as the image's user, serving a tiny ONNX model
# through the python backend, then the pipeline's own entry (tune_packaged) searching two configs.
TUNING_SERVING = {
    "maxBatchSize": 8,
    "dynamicBatching": {"maxQueueDelayMicroseconds": 500},
    "tuning": SHORT_TUNING,
}
TRITON_IN_IMAGE = """
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import tritonclient.http as httpclient
from optiserve.api.serving import ServingSpec
from optiserve.serve import LocalTriton
from optiserve.serve.install import find_triton
from optiserve.serve.repository import onnx_signature, write_onnx_model
from optiserve_optimizer.tuning import tune_packaged

model, spec = Path(sys.argv[1]), ServingSpec.model_validate(json.loads(sys.argv[2]))
install = find_triton()
ldd = subprocess.run(["ldd", str(install.stub)], env=install.environment(),
    capture_output=True, text=True, check=True).stdout
repository = Path("/tmp/repository")
write_onnx_model(repository, "tiny", model, spec)
x = (np.arange(20, dtype=np.float32).reshape(5, 4) - 8) / 4
with LocalTriton(repository, spec, startup_timeout_s=120, install=install) as triton:
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    served = client.infer("tiny", [tensor]).as_numpy("y")
    client.close()
    shm = sorted(p.name for p in Path("/dev/shm").iterdir())
log = []
tuned = tune_packaged("tiny", spec, model, onnx_signature(model), "onnxruntime_onnx", {"x": x},
    (repository / "tiny" / "config.pbtxt").read_text(), log.append)
print(json.dumps({"binary": str(install.binary), "stub": str(install.stub),
    "libpython": [os.path.realpath(line.split()[2]) for line in ldd.splitlines()
                  if "libpython3.11.so.1.0 => /" in line],
    "served": served.tolist(), "shm": shm, "summary": tuned.summary.to_wire(),
    "plot": tuned.files.get("tuning.png", b"")[:8].hex(), "log": log}))
"""


@pytest.mark.timeout(900)
def test_the_optimizer_image_runs_the_tuning_search_on_its_own_tritonserver(
    images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    image = images["optimizer"]
    tmp = tmp_path / "tmp"  # the container's /tmp (the Job's emptyDir)
    tmp.mkdir()
    matmul_relu(tmp / "model.onnx").chmod(0o644)
    argv = ["python3", "-c", TRITON_IN_IMAGE, "/tmp/model.onnx", json.dumps(TUNING_SERVING)]
    code, out, err = run_in_image(image, argv, tmp_path, timeout=600)
    assert code == 0, err[-4000:]
    seen = json.loads(out.splitlines()[-1])

    site = image.site_packages()
    assert seen["binary"] == f"{site}/pytriton/tritonserver/bin/tritonserver"
    assert seen["stub"].endswith("/python_backend_stubs/3.11/triton_python_backend_stub")
    # The stub embeds CPython: the image has the shared libpython it links (the base's package).
    (libpython,) = seen["libpython"]
    assert (image.rootfs() / libpython.lstrip("/")).is_file()
    assert "libpython3.11" in (image.archive.parent / "optimizer.dpkg.txt").read_text().split()
    x = (np.arange(20, dtype=np.float32).reshape(5, 4) - 8) / 4
    np.testing.assert_allclose(seen["served"], np.maximum(x @ WEIGHT, 0), rtol=1e-6)
    # The python backend's tensors went through /dev/shm (why the tuning Job mounts one).
    assert any(region.startswith("optiserve_") for region in seen["shm"]), seen["shm"]

    assert short_search_problems(seen["summary"]) == [], seen["log"]
    assert any("tritonserver ready" in line for line in seen["log"])
    assert seen["plot"] == "89504e470d0a1a0a"  # tuning.png: matplotlib draws in the image too
    # The servers' working folders (the repository twin, the log) were under /tmp and are gone.
    assert not list(tmp.glob("optiserve-triton-*")) and not list(tmp.glob("optiserve-tuning-*"))
