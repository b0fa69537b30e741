"""The TLS trust of every https connection optiserve.remote makes (S3 endpoints, https://
inputs): the system's roots plus, when ``OPTISERVE_CA_BUNDLE`` names a PEM file, its CAs.

The operator sets that variable (and mounts the file) from ``spec.objectStore.caBundle``.
Both are trusted, not the bundle alone (which is what ``create_default_context(cafile=...)``
would give): one model may read its store on a private CA and a dataset from a public host,
and one trust setting covers all of its remote inputs. ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
still move the system's roots as OpenSSL defines them.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from optiserve.remote.errors import FetchError

CA_BUNDLE_ENV = "OPTISERVE_CA_BUNDLE"


class CaBundleError(FetchError):
    """The CA bundle file cannot be read or holds no PEM certificate."""

    reason = "CaBundleInvalid"


class UntrustedCertificateError(FetchError):
    """The server's certificate did not verify (unknown CA, wrong host name, expired)."""

    reason = "UntrustedCertificate"


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying client context: the system's roots, plus ``ca_bundle``'s CAs when given.
    Raises :class:`CaBundleError` naming the path when the file is unreadable or invalid."""
    context = ssl.create_default_context()  # loads the default roots, verifies host names
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except ssl.SSLError as err:
            raise CaBundleError(
                ca_bundle, f"the CA bundle holds no valid PEM certificate ({err.reason or err})"
            ) from None
        except OSError as err:
            raise CaBundleError(
                ca_bundle, f"the CA bundle cannot be read ({err.strerror or err})"
            ) from None
    return context


def ca_bundle_from_env(env: Mapping[str, str]) -> str | None:
    return env.get(CA_BUNDLE_ENV) or None


def untrusted(uri: str, err: ssl.SSLCertVerificationError, ca_bundle: str | None) -> FetchError:
    """The typed error of a failed verification, with what to do about it."""
    detail = err.verify_message or err.reason or str(err)
    hint = (
        f"(CA bundle {ca_bundle} was trusted too)"
        if ca_bundle
        else f"(signed by a private CA? set spec.objectStore.caBundle; {CA_BUNDLE_ENV} here)"
    )
    return UntrustedCertificateError(
        uri, f"the server's certificate is not trusted: {detail} {hint}"
    )
