"""protocol-assert: the protocol's own checks fail: an expected-bytes check (`k.expect_text`,
like ftrace_bug()) or a bug it declares (`k.bug`)."""

from __future__ import annotations

from .base import Oracle


class ProtocolAssert(Oracle):
    id = "protocol-assert"
    fires_when = "the protocol's own expected-bytes checks (like ftrace_bug) fail"
    TITLES = {"text": "protocol assertion: unexpected {what} at {site}",
              "bug": "protocol assertion: {message}"}

    def on_text_mismatch(self, cpu, site, what, expected, found) -> None:
        self.report(cpu, "text", f"expected {expected.hex(' ')}, found {found.hex(' ')}",
                    what=what, site=site.name)

    def on_bug(self, cpu, message) -> None:
        self.report(cpu, "bug", message, message=message)
