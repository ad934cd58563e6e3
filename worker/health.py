"""Container health check: exit 0 when a worker on this machine has refreshed its presence key in Redis."""

import socket
import sys

import redis

from backend.core.settings import get_settings


def main() -> int:
    settings = get_settings()
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    keys = list(r.scan_iter(f"{settings.redis_prefix}worker:*@{socket.gethostname()}"))
    return 0 if keys else 1


if __name__ == "__main__":
    sys.exit(main())
