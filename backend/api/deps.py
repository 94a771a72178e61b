"""Dependencies shared by the routes (the services built by the app's lifespan)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.rag import RagService
from backend.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_rag(request: Request) -> RagService:
    return request.app.state.rag


RagDep = Annotated[RagService, Depends(get_rag)]
