"""FastAPI dependencies as typed aliases (``CtxDep``, ``SettingsDep``, ``ServingDep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.context import AppContext
from service.serving import ServingModel
from service.settings import Settings


def get_ctx(request: Request) -> AppContext:
    """The AppContext of the app serving this request."""
    return request.app.state.ctx


def get_settings(request: Request) -> Settings:
    return request.app.state.ctx.settings


def get_serving(request: Request) -> ServingModel:
    """The serving model, read once per request; 503 model_not_ready before the first load."""
    return request.app.state.ctx.state.require()


CtxDep = Annotated[AppContext, Depends(get_ctx)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ServingDep = Annotated[ServingModel, Depends(get_serving)]
