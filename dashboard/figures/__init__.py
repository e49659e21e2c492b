"""One module per view: ``process_data`` (engine result -> small arrays) and
``create_figure`` (arrays -> plotly figure with labelled axes and units)."""

GRAPH_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "png", "scale": 2},
}
