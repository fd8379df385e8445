"""Every response the tests get is checked against the API's OpenAPI document with
openapi-core, as jupyterlab_server's own tests check theirs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from agentorch_nb.server.handlers import API, SPEC

OPENAPI = OpenAPI.from_dict(SPEC)


@dataclass
class Request:
    url: str
    method: str
    body: bytes | None
    content_type: str = "application/json"
    parameters: RequestParameters = field(init=False)

    def __post_init__(self):
        self.method = self.method.lower()
        query = {k: v for k, v in parse_qs(urlparse(self.url).query).items()}
        self.parameters = RequestParameters(query=ImmutableMultiDict(query), header=Headers(),
                                            cookie=ImmutableMultiDict(), path={})

    @property
    def host_url(self) -> str:
        return "http://server"

    @property
    def path(self) -> str:
        """The path below the API's root: the document's server is ``/agentorch/api/v1``."""
        path = urlparse(self.url).path
        return path[path.index(API):]


@dataclass
class Response:
    status_code: int
    data: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)


def check(url: str, method: str, body: bytes | None, status: int, data: bytes) -> None:
    """Raise unless ``data`` is what the document says ``method url`` answers with ``status``."""
    json.loads(data)
    OPENAPI.validate_response(Request(url, method, body), Response(status, data))
