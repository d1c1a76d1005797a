"""``RunDetails``: the anywidget whose JavaScript (``widget.js``) follows a run live in the notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the run widget needs anywidget: pip install 'runstream[notebook]' (or pip install anywidget)"
    ) from exc

from runstream.sdk.run import Run

ESM = Path(__file__).with_name("widget.js")


class RunDetails(anywidget.AnyWidget):
    """A run's status, timestamps, live charts, log tail, child runs and studio link.

    ``run`` is a ``Run`` (from ``runstream.start_run`` or ``runstream.get_run``);
    ``api_url`` and ``token`` override where the browser connects (by default the
    SDK's ``RUNSTREAM_API`` and ``RUNSTREAM_TOKEN``). The browser must reach that
    address: for a remote kernel, pass the address as the browser sees it.
    """

    _esm = ESM
    api_url = traitlets.Unicode("").tag(sync=True)
    token = traitlets.Unicode("").tag(sync=True)
    run_id = traitlets.Unicode("").tag(sync=True)
    workspace = traitlets.Unicode("default").tag(sync=True)
    portal_url = traitlets.Unicode("").tag(sync=True)
    max_lines = traitlets.Int(200).tag(sync=True)

    def __init__(
        self, run: Run, *, api_url: str | None = None, token: str | None = None, **kwargs: Any
    ) -> None:
        config = run._client.config
        super().__init__(
            api_url=(api_url or config.api).rstrip("/"),
            token=token if token is not None else (config.token or ""),
            run_id=run.run_id,
            workspace=run.workspace,
            portal_url=run.get_portal_url(),
            **kwargs,
        )

    def show(self) -> None:
        """Display the widget in the notebook and return at once; the browser keeps it live."""
        from IPython.display import display

        display(self)  # type: ignore[no-untyped-call]
