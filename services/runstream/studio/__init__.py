"""The studio: the web UI, built from ``services/studio`` into ``dist/`` and served by Runstream."""

from runstream.studio.routes import DIST_DIR, is_studio_path, studio_routes

__all__ = ["DIST_DIR", "is_studio_path", "studio_routes"]
