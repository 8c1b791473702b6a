"""The plots page a person opens: DVC's own `dvc plots` page, made to work with no network.

- ``reporting.vega_libraries``: builds and checks ``.dvc/plots/offline.html``, DVC's page template
  with the pinned Vega libraries inlined (``plots.html_template`` in ``.dvc/config``).
- ``reporting.plots_page``: that page with a table of the metrics of one or two revisions on top.
"""
