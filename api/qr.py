"""The otpauth URI as a QR code, an SVG document a page can show as an <img> without a
script library of its own (docs/api.md, POST /v1/me/mfa/enrollment).

segno encodes it: QR encoding (Reed-Solomon blocks, masking, version choice) is a
standard we would rather not reimplement, and segno is pure Python with no
dependency. The document is paths only: no script, no link, no external reference.
"""

from __future__ import annotations

import io

import segno


def otpauth_svg(uri: str) -> str:
    """Black modules on white with the standard 4-module quiet zone; a viewBox and no
    fixed size, so the page sizes it. Error correction M: a phone camera reads it off
    a screen with glare, and the symbol stays small."""
    code = segno.make(uri, error="m", micro=False, boost_error=False)
    out = io.BytesIO()
    code.save(
        out,
        kind="svg",
        border=4,
        dark="#000",
        light="#fff",
        xmldecl=False,
        svgclass=None,
        lineclass=None,
        omitsize=True,
        title="QR code for your authenticator app",
    )
    return out.getvalue().decode("utf-8")
