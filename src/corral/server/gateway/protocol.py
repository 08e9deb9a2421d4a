"""The little of OpenAI's wire format the gateway reads or writes itself.

Request bodies are relayed as the client sent them; the gateway only looks
at ``model`` (which instance) and ``stream`` (how to relay the answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from corral.server.gateway.errors import bad_request
from corral.server.services.routing import ServedModel


@dataclass(frozen=True)
class RequestHead:
    """What routing and relaying need from an inference request's body."""

    model: str
    stream: bool


def read_head(body: bytes) -> RequestHead:
    """``model`` and ``stream`` of a JSON request body; a 400 ``GatewayError``
    when the body is not a JSON object or names no model."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad_request(f"The request body is not valid JSON: {e}", "invalid_json") from e
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = parsed.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "The request body must name a model: 'model' is missing or not a string.",
            "missing_model",
            param="model",
        )
    # Anything but a JSON true is a plain request to us; the engine rejects
    # a malformed value itself, and that answer is relayed as it is.
    return RequestHead(model=model, stream=parsed.get("stream") is True)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "corral"

    @classmethod
    def of(cls, model: ServedModel) -> ModelCard:
        return cls(id=model.name, created=model.created)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
