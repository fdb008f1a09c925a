"""The pack compiler: manifest text in, a validated plan and its hash out.

Pure: no I/O, no clock.
"""

from compiler.ceilings import Ceilings
from compiler.compile import CompiledPlan, compile_manifest, load_manifest
from compiler.errors import ErrorDetail, ManifestError

__all__ = [
    "Ceilings",
    "CompiledPlan",
    "ErrorDetail",
    "ManifestError",
    "compile_manifest",
    "load_manifest",
]
