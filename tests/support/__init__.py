"""What the tests share: free ports, starting a server and waiting until it answers, and one scripted
OpenAI-compatible stub server. Importable as ``tests.support`` (the repository root is on pytest's
``pythonpath``, see pyproject.toml)."""

from tests.support.ports import free_port
from tests.support.servers import SRC, ServedProcess, serve_app, src_env, start_process
from tests.support.stub_server import FAULTS, Call, Refusal, Reply, StubServer, hashed_words

__all__ = ["FAULTS", "SRC", "Call", "Refusal", "Reply", "ServedProcess", "StubServer", "free_port",
           "hashed_words", "serve_app", "src_env", "start_process"]
