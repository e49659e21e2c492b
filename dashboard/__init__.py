"""The dashboard's layers below the pages: configuration, storage (results library),
uploads and server-side paths, the analysis model (jobs and slider recomputation), and
one module per figure in ``figures/`` (pure ``process_data`` and ``create_figure``)."""
