"""Object storage for product images: pre-signed direct uploads (S3, or the app itself locally)."""
