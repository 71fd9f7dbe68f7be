"""The Activations dashboard: actlog's own TensorBoard plugin.

TensorBoard finds it through the ``tensorboard_plugins`` entry point declared in
``pyproject.toml``; nothing here needs importing by hand. :mod:`actlog.plugin.plugin`
holds the backend routes, ``static/`` the front end (a plain ES module).
"""
