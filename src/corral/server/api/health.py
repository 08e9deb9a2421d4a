"""``/healthz``: the one endpoint that needs no credential."""

from __future__ import annotations

from fastapi import APIRouter

from corral import __version__

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and serving HTTP. Reveals nothing else."""
    return {"status": "ok", "version": __version__}
