"""Bearer tokens: issuing the embedded token and checking every request."""

from runstream.auth.middleware import BearerAuthMiddleware
from runstream.auth.tokens import TokenStore, load_or_create_token

__all__ = ["BearerAuthMiddleware", "TokenStore", "load_or_create_token"]
