# IonDiff dashboard: web (gunicorn) and Celery worker share this image.
# Built and run by tests/deploy/test_image.py (podman, --format docker).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    IONDIFF_DATA=/data \
    IONDIFF_HOST=0.0.0.0 \
    IONDIFF_PORT=8050

RUN useradd --create-home --uid 1000 iondiff \
 && mkdir -p /data /app \
 && chown iondiff:iondiff /data

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# Everything the app reads at run time (.dockerignore keeps tests, benchmarks, data out).
COPY iondiff_core/ iondiff_core/
COPY dashboard/ dashboard/
COPY docs/*.md docs/
COPY app.py gunicorn.conf.py ./

USER iondiff
VOLUME ["/data"]
EXPOSE 8050

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8050/health', timeout=4).status == 200 else 1)"

# Workers, threads, timeouts: gunicorn.conf.py.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:server"]
