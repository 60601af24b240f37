"""The ``regionkit`` command's sub-apps: private to :mod:`cli`, not a library API.

One module per sub-app (``regionkit policy``, ``local``, ``infra``, ...), and
:mod:`_cli.common` for what they share: the console, settings and policy loading, the
checks of paths and options, and the error and exit-code conventions. Only ``cli.py``
and the modules of this package import it (``tests/test_exports.py`` enforces it).
"""
