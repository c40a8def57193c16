"""Where the package's warnings point: at the user's line, not at the package's inside."""
import os
import sys
from types import FrameType
from typing import Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` called here that names the first caller outside this
    package (the user's line: a control's ``backward()``, a ``with`` block, a model's ``forward``), however
    deep inside the package the warning is."""
    frame: Optional[FrameType] = sys._getframe(1)
    level = 1   # the function that calls warnings.warn
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame, level = frame.f_back, level + 1
    return level
