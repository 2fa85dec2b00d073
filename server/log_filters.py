"""What the server logs of its clients: one line per connection and per mistake, no tracebacks.

A client decides how often these lines are written, so each costs the server a line, not five:
uvicorn logged a text frame that is not UTF-8 as an ERROR with a traceback (which alerting
treats as the server's own fault), and websockets added "connection open" to uvicorn's own
line for every WebSocket accepted.
"""

from __future__ import annotations

import logging

NOT_UTF8 = "Invalid UTF-8 sequence received from client."  # uvicorn's message, closing with 1007


class ClientNoise(logging.Filter):
    """For the ``uvicorn.error`` logger: drops websockets' "connection open" and turns
    uvicorn's invalid-UTF-8 error into an INFO line like the server's other closes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "connection open":  # uvicorn's '"WebSocket /ws" [accepted]' says it
            return False
        if record.msg == NOT_UTF8:
            record.msg, record.args = "closing a connection: a text frame is not valid UTF-8", ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
