"""Suite-wide hooks.

``KERNELFIT_VERDICT_AUDIT=FILE pytest`` records the verdict of every converged fit the suite
makes (``kernelfit.fit.verdict``) and writes one line per fit that is not ``'ok'`` to FILE,
with the test that made it: the evidence that fits which were fine stay ``'ok'`` (issue 16).
It is off by default: assessing a fit computes its residual, which most tests never need.
"""

from __future__ import annotations

import os

import pytest

_AUDIT = os.environ.get("KERNELFIT_VERDICT_AUDIT")


if _AUDIT:
    @pytest.fixture(autouse=True)
    def _audit_verdicts(request):
        from kernelfit.fit.result import KernelFit

        made = []
        original = KernelFit.__init__

        def recording(self, *args, **kwargs):
            original(self, *args, **kwargs)
            made.append(self)
        KernelFit.__init__ = recording
        try:
            yield
        finally:
            KernelFit.__init__ = original
        lines = []
        for fit in made:
            if not fit.converged:
                continue
            try:
                verdict = fit.verdict
            except Exception as exc:   # noqa: BLE001 - the audit reports, never fails a test
                lines.append(f"{request.node.nodeid}\terror\t{exc!r}")
                continue
            lines.append(f"{request.node.nodeid}\t{verdict.level}\t{'; '.join(verdict.reasons)}")
        with open(_AUDIT, "a", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)
