"""gunicorn settings of the IonDiff dashboard: ``gunicorn -c gunicorn.conf.py app:server``
(the Dockerfile and docker-compose.yml run it). Command-line flags and GUNICORN_CMD_ARGS
override these values, e.g. ``gunicorn -c gunicorn.conf.py --workers 2 app:server``."""

bind = "0.0.0.0:8050"
workers = 4
threads = 4  # slider callbacks overlap while one is busy
timeout = 300  # s a worker may stay silent (a long callback) before it is replaced
