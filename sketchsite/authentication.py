"""API authentication: HTTP Basic first, so a failed login is a 401 with WWW-Authenticate, and a client that
django-axes has locked out after too many failures is told so (429 with Retry-After) rather than "invalid
username/password" again."""

from __future__ import annotations

from typing import Any

from axes.helpers import get_cool_off
from drf_spectacular.authentication import BasicScheme
from rest_framework import authentication, exceptions
from rest_framework.request import Request


class BasicAuthentication(authentication.BasicAuthentication):
    """DRF's Basic authentication (credentials go through axes' backend, which counts the failures)."""

    def authenticate_credentials(self, userid: str, password: str, request: Request | None = None) -> Any:
        try:
            return super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            # axes' failure handler marks the request (here DRF's, which is what authenticate() was given).
            if request is not None and getattr(request, "axes_locked_out", False):
                cool_off = get_cool_off(request)
                raise exceptions.Throttled(  # DRF adds "Expected available in N seconds." and Retry-After
                    wait=cool_off.total_seconds() if cool_off else None,
                    detail="too many failed logins from this address: locked out.",
                ) from None
            raise


class BasicAuthenticationScheme(BasicScheme):
    """The OpenAPI schema's name for it: the same http/basic scheme as DRF's own class (registered on import)."""

    target_class = "sketchsite.authentication.BasicAuthentication"
