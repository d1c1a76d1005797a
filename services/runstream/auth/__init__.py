"""Bearer tokens scoped to a workspace and a role: grants, the registry, the middleware."""

from runstream.auth.grants import Principal, Role
from runstream.auth.middleware import BearerAuthMiddleware, principal_of
from runstream.auth.registry import TokenRegistry
from runstream.auth.tokens import load_or_create_token

__all__ = [
    "BearerAuthMiddleware",
    "Principal",
    "Role",
    "TokenRegistry",
    "load_or_create_token",
    "principal_of",
]
