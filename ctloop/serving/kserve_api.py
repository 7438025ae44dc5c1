"""kserve, imported once for the server modules (serving environment only).

``kserve.model_server`` runs argparse over ``sys.argv`` when imported: the caller's own CLI
flags must not reach it, where a clash or an ambiguous prefix of a KServe flag exits the
process. Every server module imports kserve from here, so that holds whichever comes first.
"""

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve import model_server
    from kserve.errors import InvalidInput
    from kserve.logging import logger
finally:
    sys.argv = _argv

__all__ = ["InvalidInput", "kserve", "logger", "model_server"]
