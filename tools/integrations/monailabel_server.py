"""The web app ``python -m tools serve`` runs: MONAI Label's FastAPI app answering bad requests as client errors.

MONAI Label 0.8.5 registers no exception handler: whatever its endpoints or the app raise (an unknown model, an
unknown image id, an image the bundle cannot read, ``params`` that are not JSON) reaches Starlette's
``ServerErrorMiddleware`` and is answered ``500 Internal Server Error`` in plain text, the same answer as a real
server fault. This module takes MONAI Label's own app (``monailabel.app:app``; ``serve`` names this module's ``app``
with MONAI Label's ``--uvicorn_app`` option, so uvicorn imports it after MONAI Label has set its settings) and adds:

* a check of the request's path and query before MONAI Label's endpoints (:class:`RequestChecks`, an ASGI
  middleware): ``/infer/<model>`` and ``/train/<model>`` must name a served model and trainer, an ``image`` query
  must be an image id of the datastore (a file name of the studies folder without its extension); anything else,
  ``../`` segments and absolute paths included, is answered 404 before it reaches MONAI Label (which would take an
  existing path, relative to the server's working folder, as the image);
* FastAPI exception handlers (:func:`install`): :class:`tools.errors.InputError` anywhere in the cause chain (the
  bundles' own input checks; MONAI wraps them in ``RuntimeError``) -> 422 with its message, MONAI Label's
  ``ImageNotFoundException`` / ``LabelNotFoundException`` -> 404, its ``INVALID_INPUT`` -> 400, ``params`` that
  MONAI Label's ``/infer`` endpoint could not decode -> 400, a query or JSON body FastAPI could not parse (e.g.
  ``/train``'s) -> 400 instead of FastAPI's 422; everything else stays 500, logged with its traceback.

Every answer of these is JSON ``{"detail": "<one line>"}``, FastAPI's own shape for ``HTTPException``.
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import parse_qs

from tools.integrations.torchvision_ops import ensure_torchvision_imports

ensure_torchvision_imports()  # before monailabel imports torchvision

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from monailabel.app import app  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.exception import (  # noqa: E402
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel.interfaces.utils.app import app_instance  # noqa: E402

from tools.errors import InputError, find_cause  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["RequestChecks", "app", "client_error", "image_id_problem", "install"]

# the exception types a client error arrives as (InputError is a ValueError, MONAI wraps transforms' errors in
# RuntimeError, a vanished image is an OSError); handlers for them run in FastAPI's ExceptionMiddleware, which answers
# without re-raising. Anything they do not recognise is re-raised to the catch-all handler (a logged 500).
CARRIERS = (MONAILabelException, ValueError, RuntimeError, OSError, TypeError)


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _params_problem(exc: BaseException) -> str | None:
    """The reason when ``exc`` was raised by MONAI Label's ``/infer`` endpoint using the form field ``params``
    (``json.loads(params)`` then ``request.update(...)``, unchecked, in ``monailabel.endpoints.infer.run_inference``):
    the endpoint's frame is found in the traceback and its ``params`` compared with what failed."""
    tb, frame = exc.__traceback__, None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "run_inference" and code.co_filename.replace(os.sep, "/").endswith(
                "monailabel/endpoints/infer.py"):
            frame = tb
        tb = tb.tb_next
    if frame is None:
        return None
    local = frame.tb_frame.f_locals
    params = local.get("params")
    if isinstance(exc, json.JSONDecodeError) and exc.doc == params:
        return f"params: not JSON ({exc.msg}, at character {exc.pos}): {_one_line(params, 80)!r}"
    if frame.tb_next is None and "p" in local and not isinstance(local["p"], dict):  # raised by request.update(p)
        return f"params: a JSON object of the infer task's parameters expected, got a {type(local['p']).__name__}"
    return None


def client_error(exc: BaseException) -> tuple[int, str] | None:
    """``(status, one-line reason)`` when ``exc`` is the client's fault, else None (a server fault)."""
    found = find_cause(exc, InputError)
    if found is not None:
        return 422, _one_line(found)
    found = find_cause(exc, (ImageNotFoundException, LabelNotFoundException))
    if found is not None:
        return 404, _one_line(found.msg)
    found = find_cause(exc, MONAILabelException)
    if found is not None and found.error == MONAILabelError.INVALID_INPUT:
        return 400, _one_line(found.msg)
    problem = _params_problem(exc)
    return (400, problem) if problem else None


async def _answer_client_error(request: Request, exc: Exception):
    found = client_error(exc)
    if found is None:
        raise exc  # not the client's: to the catch-all handler and the server log, with the traceback
    status, reason = found
    logger.warning(f"{request.method} {request.url.path}: {status} {reason}")
    return JSONResponse({"detail": reason}, status_code=status)


async def _answer_server_fault(request: Request, exc: Exception):
    # Starlette's ServerErrorMiddleware re-raises after this answer and uvicorn logs it with its traceback
    # ("Exception in ASGI application"), so the traceback is not logged twice here
    logger.error(f"{request.method} {request.url.path}: 500, server fault {type(exc).__name__}: {_one_line(exc, 200)}")
    return JSONResponse({"detail": f"server error ({type(exc).__name__}); the traceback is in the server log"},
                        status_code=500)


async def _answer_malformed(request: Request, exc: RequestValidationError):
    # FastAPI's own answer is 422 with a list of pydantic errors; here 422 is an image the bundle cannot take, and a
    # request whose query or JSON body does not parse is malformed (400), its reason one line naming the parameter
    reasons = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        if e.get("type") == "json_invalid":
            reasons.append(f"params (the JSON body): not JSON ({e.get('msg')}, at character {loc[-1] if loc else '?'})")
        else:
            reasons.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    reason = _one_line("; ".join(reasons) or "malformed request")
    logger.warning(f"{request.method} {request.url.path}: 400 {reason}")
    return JSONResponse({"detail": reason}, status_code=400)


def image_id_problem(image_id: str, datastore) -> str | None:
    """Why ``image_id`` is not an image of ``datastore`` (a reason naming it), or None when it is one whose file
    lies inside the studies folder."""
    if not image_id or image_id in (".", "..") or any(c in image_id for c in ("/", "\\", "\0")):
        return (f"image {image_id!r}: not an image id (the name of an image of the studies folder without its "
                f"extension, no path)")
    uri = datastore.get_image_uri(image_id)
    if not uri:
        return f"image {image_id!r}: no such image in the studies folder"
    # LocalDatastore keeps the studies folder as _datastore_path (no public name); other datastores have no folder
    studies = os.path.realpath(datastore._datastore_path) if hasattr(datastore, "_datastore_path") else None
    if studies and os.path.commonpath([os.path.realpath(uri), studies]) != studies:
        return f"image {image_id!r}: resolves outside the studies folder"
    return None


class RequestChecks:
    """ASGI middleware: refuses (404, JSON) a request naming a model, trainer or image id the server does not have,
    before MONAI Label's endpoints run (they would take an unknown image id as a path, and start a training
    subprocess for an unknown trainer that fails out of sight)."""

    def __init__(self, asgi_app) -> None:
        self.app = asgi_app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            reason = self.problem(scope)
            if reason is not None:
                logger.warning(f"{scope['method']} {scope['path']}: 404 {reason}")
                await JSONResponse({"detail": reason}, status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def problem(scope) -> str | None:
        """The reason to refuse the request of ``scope``, or None."""
        path = scope["path"][len(settings.MONAI_LABEL_API_STR or ""):]
        parts = [p for p in path.split("/") if p]
        if len(parts) < 1 or parts[0] not in ("infer", "train", "datastore"):
            return None
        instance = app_instance()
        if scope["method"] == "POST" and len(parts) == 2 and parts[0] in ("infer", "train"):
            kind = "models" if parts[0] == "infer" else "trainers"
            served = instance.info().get(kind, {})
            if parts[1] not in served:
                what = "model" if parts[0] == "infer" else "trainer"
                return f"{what} {parts[1]!r}: not served here; {kind}: {', '.join(sorted(served)) or 'none'}"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        image = query.get("image", [""])[-1]
        label_put = parts[0] == "datastore" and parts[1:] == ["label"] and scope["method"] == "PUT"
        if parts[0] == "infer" and image or label_put:  # an /infer without an image id uploads the image
            return image_id_problem(image, instance.datastore())
        return None


def install(fastapi_app: FastAPI) -> FastAPI:
    """Add :class:`RequestChecks` and the exception handlers (module docstring) to ``fastapi_app``; returns it.

    Raises:
        RuntimeError: Starlette's, if ``fastapi_app`` has started (middleware cannot be added then).
    """
    fastapi_app.add_middleware(RequestChecks)
    for kind in CARRIERS:
        fastapi_app.add_exception_handler(kind, _answer_client_error)
    fastapi_app.add_exception_handler(RequestValidationError, _answer_malformed)
    fastapi_app.add_exception_handler(Exception, _answer_server_fault)
    return fastapi_app


install(app)
