"""An incremental server-sent events decoder over raw bytes: it gives each event's ``data``,
which is where the model APIs put their payload."""

from __future__ import annotations


class SSEDecoder:
    """Feed it the body's bytes as they arrive; each call returns the ``data`` of the events
    completed so far, the lines of a multi-line field joined with ``\\n``.

    Lines end at ``\\r\\n``, ``\\n`` or ``\\r`` and nowhere else (the SSE grammar), so a
    U+2028 or U+0085 inside a JSON string stays where it is. Staying in bytes hands the JSON
    parser the payload as it came, with no decoding to ``str`` on the way, and a multi-byte
    character cut between two reads is simply rejoined with the rest of its line. Other
    fields (``event``, ``id``, ``retry``) and comments (keep-alives) are skipped.
    """

    __slots__ = ("_data", "_partial", "_skip_lf")

    def __init__(self) -> None:
        self._partial = b""  # the start of a line whose end has not arrived yet
        self._data: list[bytes] = []  # the data lines of the event being read
        self._skip_lf = False  # the last read ended in "\r": a "\n" opening the next pairs it

    def feed(self, chunk: bytes) -> list[bytes]:
        # One loop, inlined: this runs once per network read of every stream.
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line[:6] == b"data: ":
                data.append(line[6:])
            elif line[:5] == b"data:":
                data.append(line[5:])
            elif line == b"data":  # a field with no colon has an empty value
                data.append(b"")
        return events

    def flush(self) -> list[bytes]:
        """At the end of the body: a last event with no blank line after it still counts.
        The first line end finishes a cut-off last line, the second ends its event."""
        events = self.feed(b"\n\n")
        self._skip_lf = False
        return events
