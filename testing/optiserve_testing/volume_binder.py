"""Test-only volume provisioner: binds every pending PersistentVolumeClaim to a new hostPath
PersistentVolume on <pvc_root>/<namespace>/<claim>, so pods with claims get scheduled (the
scheduler waits for bound claims) and the pod runner finds the claim's data in that folder."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

LOG = logging.getLogger(__name__)
PROVISIONED_BY = "optiserve.io/provisioned-by"


def persistent_volume_for(claim: dict[str, Any], pvc_root: Path) -> dict[str, Any]:
    """A PersistentVolume pre-bound to `claim` (camelCase dict), backed by a local folder."""
    metadata, spec = claim["metadata"], claim["spec"]
    namespace, name = metadata["namespace"], metadata["name"]
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"local-{namespace}-{name}"[:253],
            "annotations": {PROVISIONED_BY: "optiserve_testing.volume_binder"},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(pvc_root / namespace / name), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": name,
                "uid": metadata["uid"],
            },
        },
    }


def claim_manifest(name: str, storage: str = "1Gi") -> dict[str, Any]:
    """A ReadWriteOnce PersistentVolumeClaim; the binder below gives it a local folder."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
    }


class VolumeBinder:
    def __init__(self, api_client: client.ApiClient, pvc_root: Path) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.pvc_root = pvc_root

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.bind_pending_claims()
            except Exception:
                LOG.exception("volume binder round failed")
            stop.wait(0.5)

    def bind_pending_claims(self) -> None:
        listed = self.core.list_persistent_volume_claim_for_all_namespaces()
        claims = self.api_client.sanitize_for_serialization(listed)  # type: ignore[no-untyped-call]
        for claim in claims.get("items", []):
            if claim["spec"].get("volumeName") or claim.get("status", {}).get("phase") != "Pending":
                continue
            volume = persistent_volume_for(claim, self.pvc_root)
            Path(volume["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
            try:
                # The client serializes a camelCase dict as it is; its stubs only name models.
                self.core.create_persistent_volume(volume)  # type: ignore[arg-type]
            except ApiException as err:
                if err.status != 409:  # 409: made in an earlier round, binding is under way
                    raise
                self._release_stale(volume["metadata"]["name"], claim["metadata"]["uid"])

    def _release_stale(self, volume_name: str, claim_uid: str) -> None:
        """A volume of the same name bound to an earlier claim (the namespace was deleted and
        made again, as e2e modules do): ours and stale, so delete it; the next round makes it
        again for the new claim, over the same folder."""
        existing = self.core.read_persistent_volume(volume_name)
        ref = existing.spec.claim_ref if existing.spec else None
        ours = (
            (existing.metadata.annotations or {}).get(PROVISIONED_BY) if existing.metadata else None
        )
        if ours and ref is not None and ref.uid != claim_uid:
            LOG.info("deleting volume %s of an earlier claim", volume_name)
            self.core.delete_persistent_volume(volume_name)

    def claim_paths(self, pod: dict[str, Any]) -> dict[str, str]:
        """Claim name -> hostPath of its bound volume, for the claims the pod mounts."""
        paths: dict[str, str] = {}
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes") or []:
            claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim_name:
                continue
            claim = self.core.read_namespaced_persistent_volume_claim(claim_name, namespace)
            volume_name = claim.spec.volume_name if claim.spec else None
            if volume_name:
                pv = self.core.read_persistent_volume(volume_name)
                if pv.spec and pv.spec.host_path is not None:
                    paths[claim_name] = pv.spec.host_path.path
        return paths
