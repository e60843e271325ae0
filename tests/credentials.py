"""Authorization headers as clients send them."""

from __future__ import annotations

import base64


def basic(username: str, password: str) -> dict[str, str]:
    """HTTP Basic credentials."""
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}
