"""Memory estimates from model metadata, before anything is downloaded.

Pure: file headers and configs in, memory footprints out. No database, no
HTTP, no asyncio. Bytes come through the ``ByteSource`` protocol
(``estimate.source``): a local file here, HTTP range requests in
``corral.sources``.
"""
