"""What needs no built image: the cache key of hack/images/build.sh and the OCI layer unpacking.

Unit tests (no marker): they run everywhere, in seconds.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from optiserve_testing.images import REPO_ROOT, apply_layer

INPUTS = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    ".ci/constraints.txt",
    "src",
    "operator",
    "optimizer",
    "hack/images",
]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what the images build from, to change without touching this checkout."""
    copy = tmp_path / "repo"
    for name in INPUTS:
        source, target = REPO_ROOT / name, copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return copy


def key_dir(repo: Path, cache: Path) -> Path:
    result = subprocess.run(
        ["bash", str(repo / "hack/images/build.sh"), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cache), "OPTISERVE_CACHE": str(cache)},
        timeout=60,
    )
    return Path(result.stdout.strip())


def test_the_cache_key_follows_the_inputs_and_only_them(checkout: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = key_dir(checkout, cache)
    assert first.parent == cache / "images"
    assert key_dir(checkout, cache) == first  # stable
    (checkout / "src/optiserve/__init__.py").touch()  # a new mtime, same content
    (checkout / "src/optiserve/__pycache__").mkdir(exist_ok=True)
    (checkout / "src/optiserve/__pycache__/x.pyc").write_bytes(b"\0")  # .dockerignore'd
    assert key_dir(checkout, cache) == first
    for changed in (
        "src/optiserve/__init__.py",
        ".ci/constraints.txt",
        "Dockerfile",
        "hack/images/deps/optimizer.txt",
    ):
        path = checkout / changed
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        assert key_dir(checkout, cache) != first, changed
        path.write_text(original)
    (checkout / "operator/new_module.py").write_text("")
    assert key_dir(checkout, cache) != first  # a new source file
    assert not (cache / "images").exists()  # --print-dir builds nothing


def deps_check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", str(repo / "hack/images/deps.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_committed_dependency_lists_match_pyproject_and_the_constraints() -> None:
    """The Dockerfile installs the third-party dependencies from hack/images/deps/: a change to
    pyproject.toml or the constraints that was not regenerated there fails here."""
    result = deps_check(REPO_ROOT)
    assert result.returncode == 0, result.stderr


def test_the_dependency_lists_follow_pyproject_and_the_constraints(checkout: Path) -> None:
    optimizer = checkout / "hack/images/deps/optimizer.txt"
    assert "torch==2.13.0\n" in optimizer.read_text()
    assert "onnx==" in optimizer.read_text()  # `onnx>=1.16`, pinned by the constraints
    constraints = checkout / ".ci/constraints.txt"
    constraints.write_text(constraints.read_text().replace("\nonnx==", "\nonnx==9.9.9\n#onnx=="))
    stale = deps_check(checkout)
    assert stale.returncode == 1
    assert "optimizer.txt" in stale.stderr and "make images-deps" in stale.stderr
    assert "operator.txt" not in stale.stderr  # only the list that changed
    pyproject = checkout / "pyproject.toml"
    unpinned = '"kopf>=1.37", "not-in-the-constraints>=1",'
    pyproject.write_text(pyproject.read_text().replace('"kopf>=1.37",', unpinned))
    assert "operator.txt" in deps_check(checkout).stderr
    subprocess.run(["python3", str(checkout / "hack/images/deps.py")], check=True, timeout=60)
    assert deps_check(checkout).returncode == 0
    assert "onnx==9.9.9\n" in optimizer.read_text()
    operator = (checkout / "hack/images/deps/operator.txt").read_text()
    assert "\nnot-in-the-constraints>=1\n" in operator  # not pinned: as pyproject writes it


def layer(*entries: tuple[str, bytes | str | None]) -> io.BytesIO:
    """A layer tar: (path, bytes) a file, (path, None) a folder, (path, str) a symlink."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    return data


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    apply_layer(
        layer(
            ("etc", None),
            ("etc/keep", b"1"),
            ("etc/gone", b"2"),
            ("opt", None),
            ("opt/old", b"3"),
            ("opt/sub", None),
            ("opt/sub/deep", b"4"),
        ),
        root,
    )
    apply_layer(
        layer(
            ("etc/.wh.gone", b""),
            ("etc/keep", b"replaced"),
            ("opt", None),
            ("opt/.wh..wh..opq", b""),
            ("opt/new", b"5"),
        ),
        root,
    )
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "etc",
        "etc/keep",
        "opt",
        "opt/new",
    ]
    assert (root / "etc/keep").read_bytes() == b"replaced"


def test_a_layer_cannot_write_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(RuntimeError, match="leaves the root"):
        apply_layer(layer(("../escape", b"x")), root)
    assert not (tmp_path / "escape").exists()


def test_a_layer_cannot_write_through_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "rootfs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    apply_layer(layer(("evil", str(outside))), root)  # an absolute link: fine as a link
    with pytest.raises(RuntimeError, match="leaves the root"):
        apply_layer(layer(("evil/x", b"x")), root)
    assert list(outside.iterdir()) == []


def test_container_paths_follow_the_images_links_inside_its_root(tmp_path: Path) -> None:
    from optiserve_testing.image_exec import _inside

    root = tmp_path / "rootfs"
    (root / "run").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")  # absolute: the image's /run, not this machine's
    (root / "lib").symlink_to("usr/lib")  # relative
    assert _inside(root, "/var/run/x") == root / "run/x"
    assert _inside(root, "/lib/python3/x") == root / "usr/lib/python3/x"
    assert _inside(root, "//dev/../../etc") == root / "etc"
    (root / "loop").symlink_to("/loop")
    with pytest.raises(RuntimeError, match="symbolic links"):
        _inside(root, "/loop/x")


def test_the_short_tuning_search_reads_the_same_from_the_image_and_from_the_status() -> None:
    """optiserve_testing.image_tuning, shared by the images tier and the e2e from the images:
    its search is a valid spec.serving.tuning, and its verdict reads TuningSummary's wire form
    (the tier's tune_packaged result and status.serving.tuning are the same model)."""
    from optiserve.api.tuning import TuningSpec, TuningSummary
    from optiserve_testing.image_tuning import SHORT_TUNING, short_search_problems

    assert TuningSpec.model_validate(SHORT_TUNING).max_trials == 2

    def summary(**fields: object) -> dict[str, object]:
        wire = {"outcome": "tuned", "latencyBudgetMs": 1000, "throughputRps": 40.5, "trials": 2}
        return TuningSummary.model_validate({**wire, **fields}).to_wire()

    assert short_search_problems(summary()) == []
    assert short_search_problems(summary(outcome="untuned", trials=0, throughputRps=None)) == [
        "outcome 'untuned', not 'tuned'",
        "0 trials, not 2",
        "no throughput for the chosen config: None",
    ]
