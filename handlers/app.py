"""The application factory: ``openapi.yaml`` plus the handlers, as an ASGI app."""

from __future__ import annotations

import copy
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from anyio import CapacityLimiter
from connexion import AsyncApp
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import ProblemException
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from connexion.validators import VALIDATOR_MAP, FormDataValidator, ParameterValidator
from starlette.exceptions import HTTPException

from broker import errors, metrics, observability
from broker.ratelimits import RateLimits, open_rate_limits, parse_networks
from broker.runtime import Runtime, open_runtime
from broker.settings import Settings, load_settings
from handlers import middleware, problems
from handlers.middleware import RequestLogMiddleware
from handlers.spec_documents import SpecDocuments

# handlers/openapi.yaml links to the top-level spec, so an installed wheel carries it too.
SPEC_PATH = Path(__file__).resolve().parent / "openapi.yaml"


def load_spec() -> dict[str, Any]:
    """``openapi.yaml`` as a dict of its own, for the caller to keep or change.

    The file is parsed once per process, with libyaml's parser when PyYAML has it
    (the pure-Python parser took most of the time an app took to build), and copied
    for each caller: Connexion is handed this dict rather than the file, so the spec
    is no longer parsed a second time for every app.
    """
    return copy.deepcopy(_parsed_spec())


@cache
def _parsed_spec() -> dict[str, Any]:
    text = SPEC_PATH.read_text("utf-8")
    if yaml.__with_libyaml__:
        document: dict[str, Any] = yaml.load(text, Loader=yaml.CSafeLoader)
        return document
    return dict(yaml.safe_load(text))


class SnakeCaseResolver(Resolver):  # type: ignore[misc]
    """``operationId: getActionItemUrl`` + controller -> ``controller.get_action_item_url``.

    Keeps operationIds readable in generated clients and function names Pythonic.
    """

    def resolve_operation_id(self, operation: Any) -> str:
        operation_id = str(operation.operation_id)
        controller = operation.router_controller
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()
        return f"{controller}.{name}" if controller else name


class NamedParameterValidator(ParameterValidator):  # type: ignore[misc]
    """Connexion's parameter validator, but every message names the parameter.

    An operation whose parameters carry ``x-ctt-accept-extra-query: true`` (the
    Microsoft callback) accepts query parameters the spec does not list: Microsoft
    adds fields over time, and refusing them would strand the admin.
    """

    def __init__(self, parameters: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(parameters, *args, **kwargs)
        if any(p.get("x-ctt-accept-extra-query") for p in parameters):
            self.strict_validation = False

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        error = ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        if error is None:
            return None
        summary = str(error).split("\n\n", 1)[0].strip()
        return f"{summary} - '{param.get('name', param_name)}'"


class OpenFormDataValidator(FormDataValidator):  # type: ignore[misc]
    """Form bodies whose schema allows ``additionalProperties`` accept unlisted fields.

    Connexion's strict mode refuses them whatever the schema says; Microsoft's
    form_post return may carry fields the spec does not list yet.
    """

    def _validate_params_strictly(self, data: dict[str, Any]) -> None:
        if not self._schema.get("additionalProperties"):
            super()._validate_params_strictly(data)


BODY_VALIDATORS = MediaTypeDict(
    {**VALIDATOR_MAP["body"], "application/x-www-form-urlencoded": OpenFormDataValidator}
)


def swagger_ui_options(settings: Settings, spec: dict[str, Any]) -> SwaggerUIOptions:
    """Swagger UI that works on the first try.

    Connexion serves the spec with a relative server (its base path), which Swagger UI
    shows as an empty choice; the UI gets the spec in its config instead, with this
    broker's public base URL as the server. The API key survives a reload
    (``persistAuthorization``, kept in the browser's local storage).
    """
    described = {
        **spec,
        "servers": [{"url": settings.public_base_url, "description": "this broker"}],
    }
    return SwaggerUIOptions(
        swagger_ui=settings.swagger_ui,
        swagger_ui_config={"spec": described, "persistAuthorization": True},
    )


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    rate_limits: RateLimits | None = None,
    *,
    configure_logs: bool = False,
) -> AsyncApp:
    """Build the ASGI app for ``settings`` (and an explicit ``runtime`` or limits in tests)."""
    runtime = runtime or open_runtime(settings)
    logging.getLogger("ctt_broker").setLevel(settings.log_level)
    if configure_logs:
        observability.configure_logging(settings.log_level)
    metrics.watch_pool(runtime.engine)
    spec = load_spec()
    app = AsyncApp(__name__, specification_dir=str(SPEC_PATH.parent))
    app.add_api(
        load_spec(),  # a copy of its own: Connexion sets defaults in what it is given
        resolver=SnakeCaseResolver(),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        pythonic_params=True,
        validator_map={"parameter": NamedParameterValidator, "body": BODY_VALIDATORS},
        swagger_ui_options=swagger_ui_options(settings, spec),
    )
    handle = problems.make_handler(problems.MethodTable(spec["paths"]))
    for exception in (
        errors.BrokerError,
        ProblemException,
        HTTPException,
        UnicodeDecodeError,
        Exception,
    ):
        app.add_error_handler(exception, handle)
    # Connexion inserts each added middleware just before its exception
    # middleware, so they run in the order added: the request log first (every
    # answer gets a request id and an access line), SecurityHeaders next (its
    # headers reach every answer), then the guards, the runtime last.
    app.add_middleware(RequestLogMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(
        middleware.SecurityHeadersMiddleware,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        hsts=settings.mode == "production",
    )
    app.add_middleware(
        middleware.RequestGuard,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        rate_limits=rate_limits or open_rate_limits(settings),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        max_concurrent_requests=settings.max_concurrent_requests,
        microsoft_limiter=CapacityLimiter(settings.microsoft_concurrency),
    )
    app.add_middleware(middleware.PathGuard, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(
        middleware.BodyGuardMiddleware,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        max_body_bytes=settings.max_body_bytes,
        max_package_bytes=settings.teams_app_package_max_bytes,
    )
    app.add_middleware(
        middleware.RuntimeMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION, runtime=runtime
    )
    # Innermost of ours: the spec documents get the request log, the headers and the guards.
    app.add_middleware(SpecDocuments, position=MiddlewarePosition.BEFORE_EXCEPTION, spec=spec)
    return app


def app_from_environment() -> AsyncApp:
    """Gunicorn's entry point: settings from ``os.environ``."""
    return create_app(load_settings(), configure_logs=True)
