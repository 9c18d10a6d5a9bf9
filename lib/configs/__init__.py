"""Task configs (MONAI Label ``TaskConfig``) registered by the app."""
