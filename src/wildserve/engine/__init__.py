"""One serving instance modeled on vLLM v1, independent of the clock that drives it."""

from wildserve.engine.admission import AdmissionLog
from wildserve.engine.config import EngineConfig
from wildserve.engine.engine import Engine, EngineLoad, StepResult
from wildserve.engine.hash_index import as_hashes
from wildserve.engine.request import EngineRequest, RequestStatus
from wildserve.engine.scheduler import AdmissionBlocker

__all__ = [
    "AdmissionBlocker",
    "AdmissionLog",
    "Engine",
    "EngineConfig",
    "EngineLoad",
    "EngineRequest",
    "RequestStatus",
    "StepResult",
    "as_hashes",
]
