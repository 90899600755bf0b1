"""Settlement logic shared by the providers."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Order


async def expire_pending_attempts(session: AsyncSession, order: Order) -> None:
    """Called when an unpaid order expires. Pending attempts stay pending on purpose: a late success
    is still settled (as a late payment) by the callback or the reconciliation job."""
    return None
