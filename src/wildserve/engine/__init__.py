"""One serving instance modeled on vLLM v1, independent of the clock that drives it."""

from wildserve.engine.config import EngineConfig
from wildserve.engine.engine import Engine, StepResult
from wildserve.engine.request import EngineRequest, RequestStatus

__all__ = ["Engine", "EngineConfig", "EngineRequest", "RequestStatus", "StepResult"]
