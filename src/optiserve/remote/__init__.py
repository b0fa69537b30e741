"""Reading models and data from object storage (``s3://``) and the web (``https://``).

``s3`` is a small S3 client (SigV4-signed requests over ``http.client``); ``fetch`` streams a
URI to its staged local path (:func:`optiserve.uri.staged_path`) with retries, size and pin
checks, and an atomic rename; ``errors`` are the typed failures, each naming the URI (never a
credential).
"""
