"""The run widget for notebooks (JupyterLab, classic Notebook, VS Code: anywidget's frontends).

    from runstream.widgets import RunDetails
    RunDetails(run).show()                       # or RunDetails(runstream.get_run(run_id))

``RunDetails`` is an ``anywidget.AnyWidget``: Python only hands the browser the
gateway's address, the token and the run id; ``widget.js`` opens the websocket
itself, draws the run as it changes and closes the socket when the run ends, so
the cell returns at once and no kernel thread is involved. ``RunDetailsModel``
is the same state in Python (see ``runstream.widgets.follow``). Needs the
``notebook`` extra (``pip install 'runstream[notebook]'``) for ``RunDetails``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runstream.widgets.follow import follow_details
from runstream.widgets.model import MAX_LINES, RunDetailsModel, Series

if TYPE_CHECKING:
    from runstream.widgets.widget import RunDetails

__all__ = ["MAX_LINES", "RunDetails", "RunDetailsModel", "Series", "follow_details"]


def __getattr__(name: str) -> Any:
    if name == "RunDetails":  # imports anywidget only when the widget itself is used
        from runstream.widgets.widget import RunDetails

        return RunDetails
    raise AttributeError(name)
