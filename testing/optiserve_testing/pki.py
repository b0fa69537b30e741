"""Throw-away PKI for the local test control plane, made with the openssl command line tool.

One CA signs the API server's serving certificate and every client certificate; Kubernetes takes a
client certificate's CN as the user name and its O entries as the groups. EC P-256 keys keep key
generation fast; the service-account signing key is RSA because that is what every component
accepts by default.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PkiError(RuntimeError):
    """openssl is missing or refused to make a key or certificate."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise PkiError("the openssl command is needed to make the test cluster's certificates")
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _new_key_request(key: Path, out: Path, subject: str, cwd: Path, *extra: str) -> None:
    """A new P-256 key in ``key`` and a request for ``subject`` in ``out`` (with ``-x509`` in
    ``extra``: a self-signed certificate instead)."""
    _openssl(
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        str(key),
        "-out",
        str(out),
        "-subj",
        subject,
        *extra,
        cwd=cwd,
    )


def make_ca(directory: Path, common_name: str = "optiserve-test-ca") -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / "ca.crt", directory / "ca.key")
    _new_key_request(
        pair.key,
        pair.cert,
        f"/CN={common_name}",
        directory,
        "-x509",
        "-days",
        "7",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )
    return pair


def make_certificate(
    ca: KeyPair,
    directory: Path,
    name: str,
    common_name: str,
    organizations: tuple[str, ...] = (),
    ip_sans: tuple[str, ...] = (),
    dns_sans: tuple[str, ...] = (),
    server: bool = False,
) -> KeyPair:
    """Sign a leaf certificate `name`.crt/.key; `server` makes it a serving cert, else a client."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    subject = "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"
    _new_key_request(pair.key, csr, subject, directory)
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}",
    ]
    sans = [f"IP:{ip}" for ip in ip_sans] + [f"DNS:{dns}" for dns in dns_sans]
    if sans:
        extensions.append("subjectAltName=" + ",".join(sans))
    extfile = directory / f"{name}.ext"
    extfile.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-days",
        "7",
        "-extfile",
        str(extfile),
        "-out",
        str(pair.cert),
        cwd=directory,
    )
    csr.unlink()
    extfile.unlink()
    return pair


def make_service_account_keys(directory: Path) -> KeyPair:
    """RSA key pair the API server signs service-account tokens with (`cert` is the public key)."""
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _openssl("genrsa", "-out", str(pair.key), "2048", cwd=directory)
    _openssl("rsa", "-in", str(pair.key), "-pubout", "-out", str(pair.cert), cwd=directory)
    return pair
