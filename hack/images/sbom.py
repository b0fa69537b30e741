"""Write an image's software bill of materials (CycloneDX 1.5 JSON) and its Python package list.

Called by hack/images/build.sh with what it read from the built image: the Debian packages
(`dpkg-query` over the image's dpkg database) and the Python distributions (importlib.metadata,
run inside the image as its own user). Nothing here is a hand list. Standard library only: it
runs on the build machine's python3, outside any virtualenv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote


def debian_components(dpkg_list: str) -> list[dict[str, Any]]:
    components = []
    for line in dpkg_list.splitlines():
        if not line.strip():
            continue
        name, version, arch = line.split("\t")
        purl = f"pkg:deb/debian/{name}@{quote(version, safe='')}?arch={arch}"
        components.append(
            {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        )
    return components


def python_components(distributions: list[dict[str, str]]) -> list[dict[str, Any]]:
    components = []
    for dist in distributions:
        name = dist["name"].lower().replace("_", "-").replace(".", "-")
        purl = f"pkg:pypi/{name}@{quote(dist['version'], safe='')}"
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": dist["name"],
            "version": dist["version"],
            "purl": purl,
        }
        if dist.get("license"):
            # License fields are free text in older metadata; keep only a short one as a name.
            component["licenses"] = [{"license": {"name": dist["license"].splitlines()[0][:200]}}]
        components.append(component)
    return components


def manifest_digest(archive: Path) -> str:
    """The digest of the image manifest the OCI archive's index points at."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise SystemExit(f"{archive}: no index.json, not an OCI archive")
        index = json.load(member)
    digest: str = index["manifests"][0]["digest"]
    return digest


def bom(image: str, digest: str, components: list[dict[str, Any]]) -> dict[str, Any]:
    name, _, version = image.rpartition(":")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "optiserve hack/images"}]},
            "component": {
                "type": "container",
                "bom-ref": f"{image}@{digest}",
                "name": name,
                "version": version,
                "hashes": [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}],
            },
        },
        "components": components,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True, help="the image's name:tag")
    parser.add_argument("--archive", type=Path, required=True, help="its OCI archive")
    parser.add_argument("--dpkg", type=Path, required=True, help="name<TAB>version<TAB>arch")
    parser.add_argument("--python", type=Path, required=True, help="JSON from importlib.metadata")
    parser.add_argument("--sbom", type=Path, required=True, help="CycloneDX JSON to write")
    parser.add_argument("--python-list", type=Path, required=True, help="name==version to write")
    args = parser.parse_args()

    distributions = json.loads(args.python.read_text())
    if not distributions:
        raise SystemExit(f"{args.image}: no Python distributions found in the image")
    components = debian_components(args.dpkg.read_text()) + python_components(distributions)
    document = bom(args.image, manifest_digest(args.archive), components)
    args.sbom.write_text(json.dumps(document, indent=1) + "\n")
    args.python_list.write_text("".join(f"{d['name']}=={d['version']}\n" for d in distributions))
    digest = hashlib.sha256(args.sbom.read_bytes()).hexdigest()[:12]
    print(f"sbom.py: {args.sbom.name}: {len(components)} components (sha256 {digest})")


if __name__ == "__main__":
    main()
