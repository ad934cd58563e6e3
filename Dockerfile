# One image for the API and the workers. CPU torch by default; the GPU worker builds with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MUJOCO_GL=egl AIME_DATA_DIR=/data

# Headless MuJoCo rendering (EGL; software fallback through Mesa) and curl for health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgl1 libgles2 libglvnd0 libosmesa6 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first and exactly (a looser spec pulls the newest CUDA build), then the project.
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY aime_core ./aime_core
COPY backend ./backend
COPY worker ./worker
COPY frontend ./frontend
RUN pip install -e . && mkdir -p /data

EXPOSE 8000
# The API by default; compose overrides the command for the workers.
CMD ["sh", "-c", "alembic -c backend/alembic.ini upgrade head && exec uvicorn backend.main:app --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 2"]
