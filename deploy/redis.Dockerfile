# Redis for the lab deployment: Debian's redis-server on the same base as the app image
# (so the stack builds with no other image; tests/deploy/test_image.py builds it so too).
FROM python:3.11-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && chown redis:redis /data
COPY deploy/redis.conf /etc/redis/iondiff.conf

USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379

HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD redis-cli --no-auth-warning ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} ping | grep -q PONG
CMD ["redis-server", "/etc/redis/iondiff.conf"]
