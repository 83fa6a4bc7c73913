"""The Flask-Admin back-office lives here (staff roles, views, audit log): see issue 3."""
