"""The sales read model: what the sales report needs of each order, as the latest order.* event described it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from shop.extensions import db


class SalesOrder(db.Model):
    """One order's latest snapshot. No foreign key to `order`: a projection is fed by events only, and can be
    rebuilt from the stream (`flask events replay`) whatever the order tables hold."""

    __tablename__ = "sales_order"

    order_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    number: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column()
    day: Mapped[date] = mapped_column(Date)  # created_at's UTC date: the report's unit
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(12))
    sold: Mapped[bool] = mapped_column(Boolean)  # paid and not cancelled: counts as revenue (services.SOLD)
    total: Mapped[int] = mapped_column(BigInteger)
    discount: Mapped[int] = mapped_column(BigInteger)
    refunded: Mapped[int] = mapped_column(BigInteger)  # the order's payments' refunded amounts, summed
    # The snapshot kept is the one with the latest (event_at, rank): events of one order may be applied out of order.
    event_at: Mapped[datetime] = mapped_column()
    rank: Mapped[int] = mapped_column()
    event_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_sales_order_day", "day", "currency"),)
