"""Errors of the /v1 routes: the ones OpenAI clients expect by name, and the route class that answers every
error of these routes (dependencies and body validation included) in OpenAI's dialect."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.errors import HTTPError, error_response, unexpected
from backend.errors import AppError

log = logging.getLogger(__name__)


def model_not_found(model: str, why: str = "") -> HTTPError:
    """404 `model_not_found` (param `model`): what OpenAI answers for a model it does not serve."""
    return HTTPError(404, "model_not_found",
                     f"The model {model!r} does not exist{why}; GET /v1/models lists the available ones.", "model")


def unsupported(param: str, what: str) -> HTTPError:
    """400 `unsupported_parameter`: a parameter of OpenAI's API this server cannot honour."""
    return HTTPError(400, "unsupported_parameter", f"{what} is not supported by this server", param)


def invalid(message: str, param: str | None = None) -> HTTPError:
    """400 `invalid_request` about one field of the request."""
    return HTTPError(400, "invalid_request", message, param)


class OpenAIRoute(APIRoute):
    """Answers the errors of its route (dependencies and body validation included) in OpenAI's dialect."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def openai_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return error_response(request, exc, "openai")
            except RequestValidationError as exc:
                err = (exc.errors() or [{}])[0]
                param = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or None
                return error_response(request, invalid(f"{param or 'body'}: {err.get('msg', 'invalid')}", param), "openai")
            except StarletteHTTPException as exc:  # FastAPI's own: a body that is not JSON, not UTF-8
                code = "invalid_request" if exc.status_code == 400 else "http_error"
                error = HTTPError(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))
                return error_response(request, error, "openai")
            except Exception as exc:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return error_response(request, unexpected(exc, "; see the server log"), "openai")

        return openai_errors
