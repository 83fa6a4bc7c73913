"""The Flask-Admin back-office at /admin/: staff log-in, dashboard, orders, catalogue, stock, customers,
staff accounts, promotions, payment provider events, the audit log, background jobs, partner webhooks and the
operations page. Every view checks its permission on the server (security.py)."""

from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from shop.accounts.models import User
from shop.audit.models import AuditEntry
from shop.catalog.models import Category, Product, ProductImage, Variant
from shop.extensions import db
from shop.orders.models import Order
from shop.payments.models import WebhookEvent
from shop.promotions.models import Promotion


def init_admin(app: Flask) -> Admin:
    from admin import views
    from admin.security import admin_time

    app.add_template_filter(admin_time, "admin_time")

    admin = Admin(
        app,
        name=app.config["SHOP_NAME"] + " back-office",
        url="/admin",
        index_view=views.DashboardView(name="Dashboard", url="/admin", endpoint="admin"),
        theme=Bootstrap4Theme(base_template="admin/shop_base.html", fluid=True),
    )
    # Passing `db` (not db.session) lets Flask-Admin use whichever session is current.
    admin.add_view(views.OrderView(Order, db, name="Orders", endpoint="orders", url="/admin/orders"))
    admin.add_view(views.ProductView(Product, db, name="Products", category="Catalogue", endpoint="products"))
    admin.add_view(views.CategoryView(Category, db, name="Categories", category="Catalogue", endpoint="categories"))
    admin.add_view(views.ImageView(ProductImage, db, name="Images", category="Catalogue", endpoint="images"))
    admin.add_view(views.StockView(Variant, db, name="Stock levels", category="Stock", endpoint="stock"))
    admin.add_view(views.LowStockView(name="Low stock", category="Stock", endpoint="low_stock", url="/admin/low-stock"))
    admin.add_view(views.CustomerView(User, db, name="Customers", endpoint="customers", url="/admin/customers"))
    admin.add_view(views.StaffAccountView(User, db, name="Staff", endpoint="staff", url="/admin/staff"))
    from admin.promotions import PromotionReportView, PromotionView

    admin.add_view(
        PromotionView(
            Promotion, db, name="Promotions", category="Promotions", endpoint="promotions", url="/admin/promotions"
        )
    )
    admin.add_view(
        PromotionReportView(
            name="Usage report", category="Promotions", endpoint="promotion_report", url="/admin/promotion-report"
        )
    )
    admin.add_view(
        views.WebhookEventView(
            WebhookEvent, db, name="Webhook events", endpoint="webhook_events", url="/admin/webhook-events"
        )
    )
    admin.add_view(views.AuditView(AuditEntry, db, name="Audit log", endpoint="audit", url="/admin/audit"))
    admin.add_view(views.UploadView(name="Uploads", endpoint="uploads", url="/admin/uploads"))
    from admin.jobs import JobsView

    admin.add_view(JobsView(name="Background jobs", endpoint="jobs", url="/admin/jobs"))
    from admin.partner_webhooks import PartnerWebhookView

    admin.add_view(
        PartnerWebhookView(name="Partner webhooks", endpoint="partner_webhooks", url="/admin/partner-webhooks")
    )
    from admin.operations import OperationsView

    admin.add_view(OperationsView(name="Operations", endpoint="operations", url="/admin/operations"))
    return admin
