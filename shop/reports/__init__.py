"""Reports for analysts, read from projections that consumer groups keep (CQRS), not from the order tables.

models.py    sales_order: one row per order, its latest snapshot as the order.* events carry it
services.py  the "sales" consumer group that keeps it, the sales report over it (sales_from_read_model), the same
             report from the order tables (sales_from_orders: the check) and replay() behind `flask events replay`
"""
